// A real OpenID provider (panva/oidc-provider, OpenID-certified) for Poplar's OAuth
// tests, on loopback. Usage: node server.mjs CONFIG.json
//
// CONFIG: {
//   "port": 4000,
//   "keys": [{"kid": "rsa-1", "type": "RSA"}, {"kid": "ec-1", "type": "EC"}, ...],
//   "keyDir": "/tmp/.../keys",          // private keys by kid, kept across restarts
//   "clients": [{"client_id": "...", "client_secret": "...", "scope": "pop3 other",
//                "claims": {"email": "alice@example.org"}, "ttl": 600, "nbfOffset": 0}],
//   "resources": {"urn:poplar:mail": {"audience": "urn:poplar:mail", "scope": "pop3 other",
//                                     "format": "jwt", "alg": "RS256"}}
// }
//
// Tokens come from the client_credentials grant with a resource indicator (RFC 8707):
// each test user has a client of its own, whose `claims` (extraTokenClaims) carry the
// user's email and name into the JWT access token and the introspection answer. That
// keeps the tests free of a browser while the tokens are the provider's real ones,
// signed with its real keys. Restarting with another "keys" list rotates keys.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import Provider, { errors } from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
fs.mkdirSync(cfg.keyDir, { recursive: true });

function privateJwk({ kid, type }) {
  const file = path.join(cfg.keyDir, `${kid}.json`);
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const pair = {
    RSA: () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }),
    EC: () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    OKP: () => crypto.generateKeyPairSync('ed25519'),
  }[type]();
  const jwk = { ...pair.privateKey.export({ format: 'jwk' }), kid, use: 'sig' };
  fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

const byClient = new Map(cfg.clients.map((c) => [c.client_id, c]));
const issuer = `http://127.0.0.1:${cfg.port}`;

const provider = new Provider(issuer, {
  clients: cfg.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: c.scope ?? 'pop3',
  })),
  jwks: { keys: cfg.keys.map(privateJwk) },
  scopes: ['openid', ...new Set(cfg.clients.flatMap((c) => (c.scope ?? 'pop3').split(' ')))],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // Poplar introspects with a client of its own, not the token's.
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? cfg.defaultResource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        const rs = cfg.resources[resource];
        if (!rs) throw new errors.InvalidTarget();
        return {
          scope: rs.scope,
          audience: rs.audience,
          accessTokenFormat: rs.format ?? 'jwt',
          ...(rs.format === 'opaque' ? {} : { jwt: { sign: { alg: rs.alg ?? 'RS256' } } }),
        };
      },
    },
  },
  // A client's "claims" go into its tokens; "nbfOffset" adds an nbf that many seconds
  // ahead (a token not valid yet).
  extraTokenClaims: async (_ctx, token) => {
    const c = byClient.get(token.clientId);
    if (!c?.nbfOffset) return c?.claims;
    return { ...c.claims, nbf: Math.floor(Date.now() / 1000) + c.nbfOffset };
  },
  ttl: {
    ClientCredentials: (_ctx, _token, client) => byClient.get(client.clientId)?.ttl ?? 600,
  },
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));
provider.listen(cfg.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
