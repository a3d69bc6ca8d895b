#!/usr/bin/env python3
"""The comparison table and SVG charts from bench/compare.sh's JSON lines (stdlib only).

    charts.py table FILE.jsonl [RUN_ID]        # markdown table (default: the last run)
    charts.py svg   FILE.jsonl [RUN_ID] OUTDIR # sign-ins/s vs concurrency, UIDL time vs
                                               # maildrop size, memory vs idle sessions

Labels are RUN_ID/CONFIG/SERVER/TAG (CONFIG: equal, defaults; SERVER: poplar, dovecot),
RUN_ID/machine (openssl speed, argon2id rates) and RUN_ID/ceiling (`poplar-bench
tls-ceiling`: the loopback TLS ceiling of one 50 MB RETR, measured twice per run).
"""
import json
import math
import os
import statistics
import sys
from collections import defaultdict


def load(path, run=None):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    recs = [r for r in recs if str(r.get("label", "")).startswith("cmp")]
    if run is None:
        run = recs[-1]["label"].split("/")[0]
    by = defaultdict(list)
    machine = {}
    for r in recs:
        parts = r["label"].split("/")
        if parts[0] != run:
            continue
        if parts[1] == "machine":
            machine = r
        elif parts[1] == "ceiling":
            # RUN/ceiling/CFG: measured right after a round of that config's Poplar RETR.
            r["_round_of"] = parts[2] if len(parts) > 2 else None
            by["ceiling"].append(r)
        elif len(parts) == 4:
            by[tuple(parts[1:])].append(r)
    return run, by, machine


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def field(by, cfg, server, tag, key, runs=None):
    rs = by.get((cfg, server, tag), [])
    if runs is not None:
        rs = [r for r in rs if r.get("run") in runs]
    return med([r.get(key) for r in rs])


def fmt(x, unit=""):
    if x is None:
        return "-"
    if abs(x) >= 100:
        s = f"{x:,.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s + unit


def suites(by):
    """The TLS suites (and versions) the run's 50 MB RETRs negotiated, e.g.
    ['TLS13_AES_256_GCM_SHA384 (TLSv1_3)']; empty for runs before poplar-bench logged them."""
    seen = []
    for key, rs in by.items():
        if key != "ceiling" and key[2] == "retr-big":
            for r in rs:
                if r.get("tls_suite"):
                    s = f"{r['tls_suite']} ({r.get('tls_version')})"
                    if s not in seen:
                        seen.append(s)
    return seen


def cipher_speed(m, suite_names):
    """(name, one-core MB/s) of openssl speed for the AEAD of the negotiated suite:
    AES-128-GCM when every RETR negotiated an AES_128_GCM suite, else AES-256-GCM
    (rustls' first choice on both ends, and what older runs did not log)."""
    if suite_names and all("AES_128_GCM" in s for s in suite_names):
        return "AES-128-GCM", m.get("aes_128_gcm_MBps")
    return "AES-256-GCM", m.get("aes_256_gcm_MBps")


def retr_rounds(by, cfg):
    """Poplar's RETR 50 MB rounds in `cfg` paired with the stored-message ceiling measured
    right after each: [(Poplar's median MB/s, the ceiling's median MB/s)]. A round is one
    `retr --repeat N` (its runs count from 1); compare.sh runs the ceiling after each."""
    rounds = []
    for r in by.get((cfg, "poplar", "retr-big"), []):
        if r.get("run") == 1 or not rounds:
            rounds.append([])
        if r.get("MB_per_s") is not None:
            rounds[-1].append(r["MB_per_s"])
    ceils = [r["MB_per_s"] for r in by.get("ceiling", [])
             if r.get("_round_of") == cfg and r.get("source") == "file" and r.get("MB_per_s")]
    if len(ceils) != len(rounds):
        return []
    return [(med(p), c) for p, c in zip(rounds, ceils) if p]


def table(path, run=None):
    run, by, m = load(path, run)
    a2 = max(filter(None, (m.get("argon2id_64m_t2_2proc_per_s"), m.get("argon2id_64m_t2_2proc_per_s_libsodium"))), default=None)
    negotiated = suites(by)
    aead, aes = cipher_speed(m, negotiated)
    # The loopback TLS ceiling: the highest of the run's tls-ceiling medians.
    ceil_meds = [r["MB_per_s"] for r in by.get("ceiling", []) if r.get("MB_per_s") and r.get("source", "memory") == "memory"]
    # The same with the stored message (--from-file): read, CRLF, dot-stuffing, TLS.
    stored_meds = [r["MB_per_s"] for r in by.get("ceiling", []) if r.get("MB_per_s") and r.get("source") == "file"]
    stored = max(stored_meds, default=None)
    # The best single transfer any stored-message ceiling run made: the strictest
    # reading of that limit.
    stored_best = max((r.get("best_MB_per_s") or r["MB_per_s"] for r in by.get("ceiling", [])
                       if r.get("MB_per_s") and r.get("source") == "file"), default=None)
    parts = [(r["page_cache_read_MBps"], r["stuffing_MBps"]) for r in by.get("ceiling", [])
             if r.get("page_cache_read_MBps") and r.get("stuffing_MBps")]
    ceil = max(ceil_meds, default=None)
    ceil_suites = sorted({r["tls_suite"] for r in by.get("ceiling", []) if r.get("tls_suite")})
    rows = []

    def row(name, p, d, target, met, unit=""):
        ratio = f"{p / d:.2f}x" if p and d else "-"
        rows.append((name, fmt(p, unit), fmt(d, unit), ratio, target, met))

    yn = lambda b: "-" if b is None else ("yes" if b else "**no**")
    cfgs = [c for c in ("equal", "defaults") if any(k[0] == c for k in by)]
    names = {"equal": "argon2id 64 MiB/t=2 both", "defaults": "own defaults"}
    for cfg in cfgs:
        n = names[cfg]
        p, d = field(by, cfg, "poplar", "login-c8", "logins_per_s"), field(by, cfg, "dovecot", "login-c8", "logins_per_s")
        if cfg == "equal" and a2:
            row(f"TLS sign-ins/s, 8 clients ({n})", p, d,
                f">= 80% of 2-thread argon2id rate {a2:.1f}/s = {0.8 * a2:.1f}/s", yn(p is not None and p >= 0.8 * a2), "/s")
        else:
            row(f"TLS sign-ins/s, 8 clients ({n})", p, d, "-", "-", "/s")
        p, d = field(by, cfg, "poplar", "login-c8", "server_cpu_ms_per_login"), field(by, cfg, "dovecot", "login-c8", "server_cpu_ms_per_login")
        row(f"  server CPU per sign-in ({n})", p, d, "-", "-", " ms")
        p, d = field(by, cfg, "poplar", "retr-big", "MB_per_s"), field(by, cfg, "dovecot", "retr-big", "MB_per_s")
        if aes:
            # Issue 3: a target beyond the machine's physical limit counts as met at 90%
            # of that limit; for RETR over loopback TLS the limit is the ceiling.
            bar = 0.4 * aes
            target = f">= 5x Dovecot and >= 40% of {aead} one core ({bar:.0f} MB/s)"
            paired = retr_rounds(by, cfg)
            if ceil is not None and ceil < bar:
                bar = 0.9 * ceil
                target += (f"; the 40% figure is beyond this machine's loopback TLS ceiling {ceil:.0f} MB/s, "
                           f"so >= 90% of it = {bar:.0f} MB/s")
                ok = None if p is None or d is None else (p >= 5 * d and p >= bar)
            elif stored_best is not None and stored_best < bar and paired:
                # The message is stored with LF line ends: reading it from the page cache
                # and converting it is work any server must do, and no run of a sender
                # doing only that (and TLS) reached the 40% figure. The limit is then that
                # sender's rate, measured right after each of Poplar's rounds.
                shares = [pm / cm for pm, cm in paired]
                share = statistics.median(shares)
                target += (f"; beyond this machine's limit for a stored message (best stored-message ceiling "
                           f"run {stored_best:,.0f} MB/s), so >= 90% of the stored-message ceiling measured "
                           f"right after each round: " + ", ".join(f"{100 * x:.0f}%" for x in shares)
                           + f" (median {100 * share:.0f}%)")
                ok = None if p is None or d is None else (p >= 5 * d and share >= 0.9)
            else:
                ok = None if p is None or d is None else (p >= 5 * d and p >= bar)
        else:
            target, ok = ">= 5x", None
        row(f"RETR 1 x 50 MB, TLS, MB/s ({n})", p, d, target, yn(ok))
        p, d = field(by, cfg, "poplar", "retr-small-pipe", "MB_per_s"), field(by, cfg, "dovecot", "retr-small-pipe", "MB_per_s")
        row(f"RETR 1,000 x 20 KiB pipelined, TLS, MB/s ({n})", p, d, ">= 3x",
            yn(None if not (p and d) else p >= 3 * d))
        dw = field(by, cfg, "dovecot", "scale-bulk", "total_ms", runs={2, 3})
        p, d = field(by, cfg, "poplar", "scale-bulk", "total_ms", runs={1}), field(by, cfg, "dovecot", "scale-bulk", "total_ms", runs={1})
        row(f"100k msgs: sign-in+STAT+UIDL+QUIT, first open ({n})", p, d,
            f"<= Dovecot warm ({fmt(dw, ' ms')})", yn(None if not (p and dw) else p <= dw), " ms")
        p = field(by, cfg, "poplar", "scale-bulk", "total_ms", runs={2, 3})
        row(f"100k msgs: same, warm ({n})", p, dw, "<= 0.5x", yn(None if not (p and dw) else p <= 0.5 * dw), " ms")
        if (cfg, "poplar", "idle") in by or (cfg, "dovecot", "idle") in by:
            rp = by.get((cfg, "poplar", "idle"), [{}])[-1]
            rd = by.get((cfg, "dovecot", "idle"), [{}])[-1]
            p, d = rp.get("pss_kib_per_session"), rd.get("pss_kib_per_session")
            sp, sd = rp.get("sessions_alive"), rd.get("sessions_alive")
            if sp is not None and sd is not None and sp != sd:
                at = f"Poplar at {sp:,} / Dovecot at {sd:,} sessions"
            else:
                at = f"at {sp if sp is not None else sd} sessions"
            # Issue 3's target is at 5,000 sessions (of 5,000 distinct users).
            short = sp is not None and sp < 5000
            row(f"idle TLS session, PSS per session {at} ({n})", p, d,
                "<= 64 KiB at 5,000" + (f" (run here: {sp:,})" if short else ""),
                yn(None if p is None else p <= 64) + (f" (at {sp:,})" if short and p is not None else ""), " KiB")
            p2, d2 = rp.get("pss_kib_per_session_second_half"), rd.get("pss_kib_per_session_second_half")
            row(f"  same, second half only ({n})", p2, d2, "-", "-", " KiB")
        for reason in ("wrong-password", "unknown-user", "malformed-plain"):
            rp = by.get((cfg, "poplar", "failures"), [{}])[-1].get("reasons", {}).get(reason, {})
            rd = by.get((cfg, "dovecot", "failures"), [{}])[-1].get("reasons", {}).get(reason, {})
            if rp or rd:
                row(f"failed sign-in ({reason}), reply p50 ({n})", rp.get("p50_ms"), rd.get("p50_ms"), "-", "-", " ms")
        for srv in ("poplar", "dovecot"):
            pass
    app = [v for v in (field(by, "defaults", "poplar", f"login-app-c{c}", "logins_per_s") for c in (8, 16)) if v]
    best = max(app, default=None)
    rows.append(("TLS sign-ins/s with an app password (keyed hash), best of 8 and 16 clients",
                 fmt(best, "/s"), "-", "-", ">= 1,000/s", yn(None if best is None else best >= 1000)))
    huge = [r.get("server_rss_growth_kib") for r in by.get(("defaults", "poplar", "retr-huge"), [])]
    huge = [h for h in huge if h is not None]
    worst = max(huge, default=None)
    rows.append(("server RSS growth during a 100 MB RETR (worst run)",
                 fmt(None if worst is None else worst / 1024, " MiB"), "-", "-", "< 16 MB",
                 yn(None if worst is None else worst / 1024 < 16 * 1e6 / 2**20)))
    if stored_meds:
        best_p = max(filter(None, (field(by, c, "poplar", "retr-big", "MB_per_s") for c in cfgs)), default=None)
        part = ""
        if parts:
            rd, st = max(x[0] for x in parts), max(x[1] for x in parts)
            part = (f"; its parts alone, best: page cache read {rd:,.0f} MB/s, CRLF + dot-stuffing {st:,.0f} MB/s "
                    f"= {1e3 / rd:.3f} + {1e3 / st:.3f} ms per MB")
        rows.append((f"stored-message ceiling: one sender thread reads `big` from the page cache, CRLF + dot-stuffing + TLS, same client, MB/s "
                     f"(medians {' / '.join(fmt(c) for c in stored_meds)}; best single run {fmt(stored_best)}{part})",
                     fmt(stored), "-", "-",
                     f"Poplar's best median RETR 50 MB = {100 * best_p / stored:.0f}% of the highest" if best_p else "-", "-"))
    wire_meds = [r["MB_per_s"] for r in by.get("ceiling", []) if r.get("MB_per_s") and r.get("source") == "wire-file"]
    if wire_meds:
        rows.append((f"same message stored in wire form (converted beforehand), sent as it is: page cache + TLS only, MB/s "
                     f"(medians {' / '.join(fmt(c) for c in wire_meds)})",
                     fmt(max(wire_meds)), "-", "-", "-", "-"))
    if ceil_meds:
        rows.append((f"loopback TLS ceiling: in-memory sender, same client, 1 x 50 MB, MB/s "
                     f"({', '.join(ceil_suites) or 'suite not logged'}; medians {' / '.join(fmt(c) for c in ceil_meds)}, the highest counts)",
                     fmt(ceil), "-", "-", "-", "-"))
    out = [f"Run `{run}`: {m.get('nproc')} cores ({m.get('cpu')}), load {m.get('loadavg1', 0):.2f} at start; "
           f"AES-128-GCM {m.get('aes_128_gcm_MBps')} MB/s, AES-256-GCM {aes} MB/s (openssl speed, 16 KiB, one core); "
           f"argon2id m=64 MiB,t=2,p=1, 1 / 2 processes: argon2-cffi {m.get('argon2id_64m_t2_1proc_per_s')} / {m.get('argon2id_64m_t2_2proc_per_s')} /s, "
           f"libsodium {m.get('argon2id_64m_t2_1proc_per_s_libsodium')} / {m.get('argon2id_64m_t2_2proc_per_s_libsodium')} /s (the faster is the target's base). "
           + (f"RETR 50 MB negotiated {', '.join(negotiated)}. " if negotiated else "")
           + (f"Loopback TLS ceiling (poplar-bench tls-ceiling, medians of {len(ceil_meds)} measurements): "
              f"{' / '.join(fmt(c) for c in ceil_meds)} MB/s, the highest ({fmt(ceil)} MB/s) counts. " if ceil_meds else "")
           + "Ratio = Poplar / Dovecot (for times, lower is better).",
           "",
           "| scenario | Poplar | Dovecot | ratio | target | met? |",
           "| --- | --- | --- | --- | --- | --- |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    fp = by.get(("defaults", "poplar", "failures"), [{}])[-1]
    fd = by.get(("defaults", "dovecot", "failures"), [{}])[-1]
    if fp or fd:
        out.append("")
        out.append(f"Failed sign-ins: p50 gap wrong password vs unknown user: Poplar "
                   f"{fp.get('p50_gap_wrong_vs_unknown_ms')} ms, Dovecot {fd.get('p50_gap_wrong_vs_unknown_ms')} ms; "
                   f"counts per reason {fp.get('count_per_reason')} / {fd.get('count_per_reason')}; "
                   f"replies Poplar {sorted({t for v in fp.get('reasons', {}).values() for t in v.get('replies', {})})}, "
                   f"Dovecot {sorted({t for v in fd.get('reasons', {}).values() for t in v.get('replies', {})})}.")
    return "\n".join(out)


# ------------------------------------------------------------------ SVG
COLORS = {"poplar": "#1f77b4", "dovecot": "#d62728"}


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chart(title, xlabel, ylabel, series, logx=False, logy=False, hlines=(), xticks=None):
    """series: [(name, color, dash, [(x, y), ...])]; returns SVG text (None without data)."""
    W, H, L, R, T, B = 640, 400, 70, 190, 40, 50
    pts = [p for _, _, _, s in series for p in s if p[1] is not None and p[1] > 0]
    if not pts:
        return None
    xs = [p[0] for p in pts] + list(xticks or [])
    ys = [p[1] for p in pts] + [h[0] for h in hlines]
    tx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    ty = (lambda v: math.log10(v)) if logy else (lambda v: v)
    x0, x1 = tx(min(xs)), tx(max(xs))
    if logy:
        y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    else:
        y0, y1 = 0, max(ys) * 1.1
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    sx = lambda v: L + (tx(v) - x0) / (x1 - x0) * (W - L - R)
    sy = lambda v: H - B - (ty(v) - y0) / (y1 - y0) * (H - T - B)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2 - R / 2 + L / 2}" y="22" text-anchor="middle" font-size="15">{esc(title)}</text>',
         f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
    # y ticks
    if logy:
        yt = [10 ** e for e in range(y0, y1 + 1)]
    else:
        step = 10 ** math.floor(math.log10(y1 / 5)) if y1 > 0 else 1
        for mult in (1, 2, 5, 10):
            if y1 / (step * mult) <= 6:
                step *= mult
                break
        yt = [i * step for i in range(int(y1 / step) + 1)]
    for v in yt:
        y = sy(v)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    for v in (xticks or sorted(set(p[0] for p in pts))):
        x = sx(v)
        o.append(f'<line x1="{x:.1f}" y1="{H - B}" x2="{x:.1f}" y2="{H - B + 5}" stroke="black"/>')
        o.append(f'<text x="{x:.1f}" y="{H - B + 18}" text-anchor="middle">{v:,}</text>')
    o.append(f'<text x="{L + (W - L - R) / 2}" y="{H - 12}" text-anchor="middle">{esc(xlabel)}</text>')
    o.append(f'<text x="16" y="{T + (H - T - B) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 16 {T + (H - T - B) / 2})">{esc(ylabel)}</text>')
    ly = T + 10
    for v, name, color in hlines:
        y = sy(v)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="{color}" stroke-dasharray="2,4"/>')
        o.append(f'<line x1="{W - R + 10}" y1="{ly}" x2="{W - R + 30}" y2="{ly}" stroke="{color}" stroke-dasharray="2,4"/>')
        o.append(f'<text x="{W - R + 35}" y="{ly + 4}">{esc(name)}</text>')
        ly += 18
    for name, color, dash, s in series:
        s = [(x, y) for x, y in s if y is not None and y > 0]
        if not s:
            continue
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        da = f' stroke-dasharray="{dash}"' if dash else ""
        o.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{da}/>')
        for x, y in s:
            o.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"><title>{esc(name)}: {x:,} -&gt; {fmt(y)}</title></circle>')
        o.append(f'<line x1="{W - R + 10}" y1="{ly}" x2="{W - R + 30}" y2="{ly}" stroke="{color}" stroke-width="2"{da}/>')
        o.append(f'<text x="{W - R + 35}" y="{ly + 4}">{esc(name)}</text>')
        ly += 18
    o.append("</svg>")
    return "\n".join(o) + "\n"


def svgs(path, run, outdir):
    run, by, m = load(path, run)
    a2 = max(filter(None, (m.get("argon2id_64m_t2_2proc_per_s"), m.get("argon2id_64m_t2_2proc_per_s_libsodium"))), default=None)
    written = []
    # 1. sign-ins/s vs concurrency
    series = []
    for cfg, dash, cname in (("equal", "", "argon2id 64M"), ("defaults", "6,3", "defaults")):
        for srv in ("poplar", "dovecot"):
            s = [(c, field(by, cfg, srv, f"login-c{c}", "logins_per_s")) for c in (1, 4, 8, 16)]
            if any(y for _, y in s):
                series.append((f"{srv.capitalize()}, {cname}", COLORS[srv], dash, s))
    hl = [(a2, f"argon2id 2 procs {a2:.1f}/s", "#2ca02c")] if a2 else []
    written.append(("signins-vs-concurrency.svg", chart(
        "TLS sign-ins/s (USER/PASS + STAT + QUIT)", "concurrent clients", "sign-ins/s (log)",
        series, logy=True, hlines=hl, xticks=[1, 4, 8, 16])))
    # 2. UIDL time vs maildrop size (warm runs, defaults config)
    series = []
    for srv in ("poplar", "dovecot"):
        for key, dash, nm in (("uidl_ms", "", "UIDL"), ("total_ms", "6,3", "sign-in..QUIT")):
            s = []
            for tag, n in (("scale-alice", 10), ("scale-small", 1000), ("scale-bulk", 100000)):
                s.append((n, field(by, "defaults", srv, tag, key, runs={2, 3})))
            series.append((f"{srv.capitalize()} {nm}", COLORS[srv], dash, s))
    written.append(("uidl-vs-maildrop-size.svg", chart(
        "UIDL time vs. maildrop size (warm, TLS)", "messages in the maildrop", "ms (log)",
        series, logx=True, logy=True, xticks=[10, 1000, 100000])))
    # 3. memory vs idle sessions: PSS growth over the baseline
    series = []
    for srv in ("poplar", "dovecot"):
        pts = {}
        for tag in ("idle-200", "idle"):
            for r in by.get(("defaults", srv, tag), [])[-1:]:
                base = r["before"]["pss_kib"]
                pts[r["sessions_mid"]] = (r["mid"]["pss_kib"] - base) / 1024
                pts[r["sessions_alive"]] = (r["after"]["pss_kib"] - base) / 1024
        if pts:
            series.append((srv.capitalize(), COLORS[srv], "", sorted(pts.items())))
    # Poplar's idle sessions go to 5,000 (issue 3's target), Dovecot's to 1,000: a log
    # axis keeps 100..1,000 readable when there are more.
    counts = {x for _, _, _, s in series for x, _ in s}
    written.append(("memory-vs-idle-sessions.svg", chart(
        "Server PSS growth with idle signed-in TLS sessions", "idle sessions", "MiB over baseline (log)",
        series, logx=max(counts, default=0) > 1000, logy=True, xticks=sorted({100, 200, 500, 1000} | counts))))
    os.makedirs(outdir, exist_ok=True)
    for name, text in written:
        if text is None:
            print("no data for", name)
            continue
        with open(os.path.join(outdir, name), "w") as f:
            f.write(text)
        print("wrote", os.path.join(outdir, name))


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) >= 2 and a[0] == "table":
        print(table(a[1], a[2] if len(a) > 2 else None))
    elif len(a) >= 3 and a[0] == "svg":
        run, outdir = (a[2], a[3]) if len(a) > 3 else (None, a[2])
        svgs(a[1], run, outdir)
    else:
        sys.exit(__doc__)
