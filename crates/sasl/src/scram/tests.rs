//! RFC 7677 section 3 test vector and channel-binding rules.

use super::*;

const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

fn rfc_keys() -> ScramKeys {
    ScramKeys::derive("pencil", &STANDARD.decode(SALT_B64).unwrap(), 4096)
}

fn no_binding() -> ChannelBinding {
    ChannelBinding::default()
}

#[test]
fn rfc7677_exchange() {
    let mut s = ScramServer::new(false, no_binding());
    let Step::LookupScram { username, authzid } = s.respond(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    else {
        panic!()
    };
    assert_eq!((username.as_str(), authzid), ("user", None));
    let Step::Challenge(server_first) =
        s.keys_with_nonce(&rfc_keys(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    else {
        panic!()
    };
    assert_eq!(
        server_first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let Step::ScramProof {
        proof_ok,
        server_final,
    } = s.respond(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    else {
        panic!()
    };
    assert!(proof_ok);
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn wrong_proof_is_not_ok() {
    let mut s = ScramServer::new(false, no_binding());
    s.respond(b"n,,n=user,r=abc");
    s.keys_with_nonce(&ScramKeys::derive("other", b"salt", 4096), "xyz");
    let Step::ScramProof { proof_ok, .. } =
        s.respond(b"c=biws,r=abcxyz,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    else {
        panic!()
    };
    assert!(!proof_ok);
}

#[test]
fn stored_form_round_trips() {
    let keys = rfc_keys();
    let stored = keys.to_stored();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
    assert_eq!(ScramKeys::parse(&stored), Some(keys));
    assert_eq!(ScramKeys::parse("SCRAM-SHA-256$0:AA==$AA==:AA=="), None);
    assert_eq!(ScramKeys::parse("garbage"), None);
    assert!(!format!("{:?}", rfc_keys()).contains("stored_key"));
}

#[test]
fn fake_keys_are_stable_per_name() {
    let a = ScramKeys::fake(b"secret", "ghost", 4096);
    assert_eq!(a, ScramKeys::fake(b"secret", "ghost", 4096));
    assert_ne!(a.salt, ScramKeys::fake(b"secret", "ghost2", 4096).salt);
}

fn first_step(plus: bool, binding: ChannelBinding, msg: &[u8]) -> Step {
    ScramServer::new(plus, binding).respond(msg)
}

#[test]
fn channel_binding_flags() {
    let exporter = ChannelBinding {
        tls_exporter: Some([7; 32]),
        plus_offered: true,
    };
    // 'y' when the server offers -PLUS: a downgrade, refused (RFC 5802 section 6).
    assert!(matches!(
        first_step(false, exporter.clone(), b"y,,n=u,r=n"),
        Step::Fail(Failure::ChannelBinding)
    ));
    // 'y' when -PLUS is not offered: fine.
    assert!(matches!(
        first_step(false, no_binding(), b"y,,n=u,r=n"),
        Step::LookupScram { .. }
    ));
    // p= with the non-PLUS mechanism, and n with -PLUS: refused.
    assert!(matches!(
        first_step(false, exporter.clone(), b"p=tls-exporter,,n=u,r=n"),
        Step::Fail(Failure::ChannelBinding)
    ));
    assert!(matches!(
        first_step(true, exporter.clone(), b"n,,n=u,r=n"),
        Step::Fail(Failure::ChannelBinding)
    ));
    // Unsupported binding types.
    assert!(matches!(
        first_step(true, exporter.clone(), b"p=tls-unique,,n=u,r=n"),
        Step::Fail(Failure::ChannelBinding)
    ));
    assert!(matches!(
        first_step(true, exporter, b"p=tls-exporter,a=u,n=u,r=n"),
        Step::LookupScram {
            authzid: Some(_),
            ..
        }
    ));
}

#[test]
fn plus_checks_the_binding_data() {
    let binding = ChannelBinding {
        tls_exporter: Some([7; 32]),
        plus_offered: true,
    };
    let keys = ScramKeys::derive("pw", b"salt", 4096);
    let run = |cbind: &[u8]| {
        let mut s = ScramServer::new(true, binding.clone());
        s.respond(b"p=tls-exporter,,n=u,r=cn");
        s.keys_with_nonce(&keys, "sn");
        let c = STANDARD.encode(cbind);
        // The proof is irrelevant here: binding is checked first.
        s.respond(format!("c={c},r=cnsn,p={}", STANDARD.encode([0u8; 32])).as_bytes())
    };
    let mut good = b"p=tls-exporter,,".to_vec();
    good.extend_from_slice(&[7; 32]);
    assert!(matches!(
        run(&good),
        Step::ScramProof {
            proof_ok: false,
            ..
        }
    ));
    let mut bad = b"p=tls-exporter,,".to_vec();
    bad.extend_from_slice(&[8; 32]);
    assert!(matches!(run(&bad), Step::Fail(Failure::ChannelBinding)));
    assert!(matches!(run(b"biws"), Step::Fail(Failure::ChannelBinding)));
}

#[test]
fn malformed_messages() {
    for bad in [
        &b""[..],
        b"n",
        b"n,,",
        b"n,,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=u",
        b"n,,n=u=2,r=abc",
        b"x,,n=u,r=abc",
        b"n,b=x,n=u,r=abc",
        b"n,,m=ext,n=u,r=abc",
        b"\xff",
    ] {
        assert!(
            matches!(first_step(false, no_binding(), bad), Step::Fail(_)),
            "{bad:?}"
        );
    }
    assert_eq!(saslname("a=2Cb=3Dc"), Ok("a,b=c".to_string()));
    let mut s = ScramServer::new(false, no_binding());
    s.respond(b"n,,n=u,r=cn");
    s.keys_with_nonce(&rfc_keys(), "sn");
    assert!(matches!(
        s.respond(b"c=biws,r=WRONG,p=AAAA"),
        Step::Fail(Failure::Malformed)
    ));
}

proptest::proptest! {
    #[test]
    fn never_panics(first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                    last in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
        let mut s = ScramServer::new(false, no_binding());
        if let Step::LookupScram { .. } = s.respond(&first) {
            s.keys_with_nonce(&rfc_keys(), "sn");
            let _ = s.respond(&last);
        }
    }
}
