"""Maildir behaviour: octet counts, byte-stuffing round trips, stable UIDLs, deletion only
on QUIT, deliveries during a session, files moved by other programs."""

import os

import pytest

from conftest import crlf

HDR = b"From: sender@example.org\nTo: alice@example.org\nSubject: stuffing\n\n"

ROUND_TRIP = {
    "dot_lines": HDR + b".\n..\n...\n.x\n..x\n .\nmiddle . line\n.\nlast\n",
    "dot_lines_crlf": (HDR + b".\n..\n.x\n..x\n.\nlast\n").replace(b"\n", b"\r\n"),
    "bare_lf": HDR + b"one\ntwo\n\nthree\n",
    "crlf": (HDR + b"one\ntwo\n\nthree\n").replace(b"\n", b"\r\n"),
    "mixed_line_ends": b"Subject: mixed\r\n\r\nline1\nline2\r\nline3\n",
    "latin1": HDR + b"caf\xe9 na\xefve \xff\xfe\x80\x81\n.\xe9 dot then latin-1\n",
    "utf8": HDR + "Grüße — 日本語 🎉\n.ünïcode after dot\n".encode(),
    "headers_only_blank": b"From: x@example.org\nSubject: headers only\n\n",
    "headers_only_no_blank": b"From: x@example.org\nSubject: no body at all\n",
    "no_final_newline": HDR + b"last line without newline",
    "no_final_newline_dot": HDR + b"text\n.",
    "no_final_newline_dotdot": HDR + b"text\n..",
    "trailing_blank_lines": HDR + b"body\n\n\n",
    "long_line": HDR + b"x" * 5000 + b"\n." + b"y" * 3000 + b"\n",
    "empty_file": b"",
    "tabs_and_spaces": HDR + b"\tindented\n   \n \t \nend  \n",
}


@pytest.fixture(scope="module")
def rt_server(module_server):
    srv = module_server()
    names = {}
    for key, data in ROUND_TRIP.items():
        names[key] = srv.deliver(data)
    srv.rt_names = names
    return srv


def number_for(c, srv, key):
    """Message number for a delivered message (the UIDL is expected to be the base name)."""
    base = srv.rt_names[key]
    for n, uid in c.uidl().items():
        if uid == base:
            return n
    # Fall back on delivery order if the server derives UIDLs differently.
    return list(srv.rt_names).index(key) + 1


@pytest.mark.parametrize("key", list(ROUND_TRIP))
def test_round_trip(rt_server, key):
    src = ROUND_TRIP[key]
    expected = crlf(src)
    with rt_server.session() as c:
        n = number_for(c, rt_server, key)
        r = c.ok(f"LIST {n}")
        size = int(r.split()[2])
        c.ok(f"RETR {n}")
        raw = c.read_multiline_raw()
        # every transmitted line that starts with "." is stuffed
        for line in raw:
            if line.startswith(b"."):
                assert line.startswith(b".."), f"unstuffed dot line {line!r}"
        body = b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in raw)
        assert body == expected, f"{key}: got {body[:300]!r}... expected {expected[:300]!r}"
        assert size == len(body), f"{key}: LIST says {size}, RETR delivered {len(body)} octets"
        if b"\n\n" in src.replace(b"\r\n", b"\n"):
            # TOP with more lines than the body has returns the whole message
            _, top = c.multi(f"TOP {n} 1000000")
            assert top == expected, f"{key}: TOP n 1000000 gave {top[:300]!r}"
        c.quit()


def test_stat_total_matches(rt_server):
    with rt_server.session() as c:
        n, total = c.stat()
        assert n == len(ROUND_TRIP)
        assert total == sum(len(crlf(v)) for v in ROUND_TRIP.values())
        assert sum(c.list().values()) == total
        c.quit()


def test_utf8_mode_does_not_change_bytes(rt_server):
    with rt_server.tls() as c:
        c.ok("UTF8")
        c.login("alice", rt_server.passwords["alice"])
        for key in ("latin1", "utf8"):
            n = number_for(c, rt_server, key)
            assert c.retr(n) == crlf(ROUND_TRIP[key])
        c.quit()


def test_uidl_stable_across_sessions_and_renames(server):
    srv = server()
    bases = [srv.deliver(f"Subject: m{i}\n\nbody {i}\n".encode()) for i in range(4)]
    with srv.session() as c:
        u1 = c.uidl()
        c.quit()
    assert len(set(u1.values())) == 4
    with srv.session() as c:
        assert c.uidl() == u1
        c.quit()
    # another program (an IMAP server, a mail client) marks everything seen
    md = srv.maildir()
    for base in bases:
        p = srv.find_message_file(base)
        assert p is not None, f"{base} vanished from the maildir"
        os.rename(p, md / "cur" / (base + ":2,S"))
    with srv.session() as c:
        u2 = c.uidl()
        by_content = {c.retr(n): uid for n, uid in u2.items()}
        c.quit()
    assert sorted(u2.values()) == sorted(u1.values()), (u1, u2)
    # same message -> same UIDL
    with srv.session() as c:
        for n, uid in c.uidl().items():
            assert by_content[c.retr(n)] == uid
        c.quit()


def test_uidl_is_base_name(server):
    srv = server()
    base = srv.deliver(b"Subject: plain\n\nx\n")
    with srv.session() as c:
        assert c.uidl() == {1: base}
        c.quit()


def test_dovecot_style_name(server):
    srv = server()
    data = b"Subject: dovecot\n\nline\n.dot\n"
    s = len(data)
    w = len(crlf(data))
    base = "1700000500.M20P300.host"
    srv.deliver(data, name=f"{base},S={s},W={w}", where="cur", info=":2,S")
    with srv.session() as c:
        assert c.uidl() == {1: base}
        r = c.ok("UIDL 1")
        assert r.split() == ["+OK", "1", base]
        assert c.list() == {1: w}
        assert c.retr(1) == crlf(data)
        c.quit()


def test_cur_messages_with_flags_are_served(server):
    srv = server()
    srv.deliver(b"Subject: new one\n\nn\n")
    srv.deliver(b"Subject: seen\n\ns\n", where="cur", info=":2,S")
    srv.deliver(b"Subject: replied\n\nr\n", where="cur", info=":2,RS")
    srv.deliver(b"Subject: no flags\n\nf\n", where="cur", info=":2,")
    with srv.session() as c:
        n, _ = c.stat()
        assert n == 4
        bodies = sorted(c.retr(i) for i in range(1, 5))
        assert bodies == sorted(crlf(x) for x in (b"Subject: new one\n\nn\n", b"Subject: seen\n\ns\n",
                                                   b"Subject: replied\n\nr\n", b"Subject: no flags\n\nf\n"))
        c.quit()


def test_tmp_and_subfolders_not_served(server):
    srv = server()
    md = srv.maildir()
    srv.deliver(b"Subject: inbox\n\nx\n")
    (md / "tmp" / "1700000999.M1P1.inflight").write_bytes(b"Subject: half-delivered\n\n")
    for sub in ("cur", "new", "tmp"):
        (md / ".Sent" / sub).mkdir(parents=True)
    (md / ".Sent" / "cur" / "1700000998.M1P1.sent:2,S").write_bytes(b"Subject: sent\n\ns\n")
    (md / "new" / ".hidden").write_bytes(b"Subject: hidden\n\nh\n")
    with srv.session() as c:
        assert c.stat()[0] == 1
        assert c.retr(1) == crlf(b"Subject: inbox\n\nx\n")
        c.quit()


def test_dele_then_drop_keeps_message(server):
    srv = server()
    base = srv.deliver(b"Subject: keep\n\nkeep me\n")
    c = srv.session()
    c.ok("DELE 1")
    assert c.stat() == (0, 0)
    c.abort()
    with srv.session() as c:
        assert c.stat()[0] == 1
        assert c.retr(1) == crlf(b"Subject: keep\n\nkeep me\n")
        c.quit()
    assert srv.find_message_file(base) is not None


def test_dele_then_rset_quit_keeps_message(server):
    srv = server()
    base = srv.deliver(b"Subject: keep\n\nkeep me\n")
    with srv.session() as c:
        c.ok("DELE 1")
        c.ok("RSET")
        c.quit()
    assert srv.find_message_file(base) is not None


def test_dele_quit_removes_file(server):
    srv = server()
    gone = srv.deliver(b"Subject: delete me\n\nbye\n")
    kept = srv.deliver(b"Subject: keep me\n\nstay\n")
    with srv.session() as c:
        uid = c.uidl()
        c.ok("DELE 1")
        r = c.ok("QUIT")
        c.expect_eof()
    assert srv.find_message_file(gone) is None, "deleted message still on disk after QUIT"
    assert srv.find_message_file(kept) is not None
    with srv.session() as c:
        assert c.stat()[0] == 1
        assert c.uidl() == {1: uid[2]}
        assert c.retr(1) == crlf(b"Subject: keep me\n\nstay\n")
        c.quit()


def test_delivery_during_session(server):
    srv = server()
    srv.deliver(b"Subject: first\n\none\n")
    srv.deliver(b"Subject: second\n\ntwo\n")
    with srv.session() as c:
        before = c.stat()
        uids = c.uidl()
        late = srv.deliver(b"Subject: late\n\narrived during the session\n")
        assert c.stat() == before
        assert c.uidl() == uids
        c.err("RETR 3")
        c.ok("DELE 1")
        c.quit()
    with srv.session() as c:
        assert c.stat()[0] == 2
        bodies = [c.retr(1), c.retr(2)]
        assert crlf(b"Subject: late\n\narrived during the session\n") in bodies
        assert crlf(b"Subject: second\n\ntwo\n") in bodies
        c.quit()
    assert srv.find_message_file(late) is not None


def test_many_messages(server):
    srv = server()
    for i in range(300):
        srv.deliver(f"Subject: bulk {i}\n\nmessage number {i}\n".encode())
    with srv.session() as c:
        assert c.stat()[0] == 300
        assert len(c.list()) == 300
        u = c.uidl()
        assert len(set(u.values())) == 300
        assert c.retr(300) == crlf(b"Subject: bulk 299\n\nmessage number 299\n")
        c.quit()


def test_message_removed_by_other_program_mid_session(server):
    srv = server()
    base = srv.deliver(b"Subject: vanishing\n\nnow you see me\n")
    srv.deliver(b"Subject: stays\n\nhere\n")
    with srv.session() as c:
        assert c.stat()[0] == 2
        os.unlink(srv.find_message_file(base))
        r = c.cmd("RETR 1")
        if r.startswith("+OK"):
            body = c.read_body()
            raise AssertionError(f"RETR of a vanished message answered +OK with {body!r}")
        assert r.startswith("-ERR"), r
        c.ok("NOOP")
        assert c.retr(2) == crlf(b"Subject: stays\n\nhere\n")
        c.ok("DELE 1")  # deleting a vanished message must not break QUIT
        r = c.ok("QUIT")
        c.expect_eof()
    with srv.session() as c:
        assert c.stat()[0] == 1
        c.quit()


def test_message_renamed_by_other_program_mid_session(server):
    """Another program (e.g. Dovecot IMAP) moves new/X to cur/X:2,S while we are signed in."""
    srv = server()
    base = srv.deliver(b"Subject: moved\n\nmoved while open\n")
    other = srv.deliver(b"Subject: deleted after move\n\nbye\n")
    md = srv.maildir()
    with srv.session() as c:
        assert c.stat()[0] == 2
        for b in (base, other):
            p = srv.find_message_file(b)
            os.rename(p, md / "cur" / (b + ":2,S"))
        assert c.retr(1) == crlf(b"Subject: moved\n\nmoved while open\n")
        c.ok("DELE 2")
        c.quit()
    assert srv.find_message_file(other) is None, "DELE of a message renamed mid-session was not committed"
    assert srv.find_message_file(base) is not None


@pytest.mark.parametrize("layout", ["two_bases", "one_base_new_and_cur"])
@pytest.mark.parametrize("removed", [0, 1])
def test_vanished_twin_never_takes_the_other_with_it(server, layout, removed):
    """Two files with one unique part (a message delivered twice, or copied): the client
    deletes one, another program removes that file before QUIT. QUIT still answers +OK
    (the message is gone) and the twin, another message of the listing, survives: the
    deletion never falls back on a file that merely shares the unique part, nor on one
    that is itself listed."""
    srv = server()
    unique = "1700000100.M7P7.twin"
    bodies = [b"Subject: twin one\n\nfirst copy\n", b"Subject: twin two\n\nthe second, longer copy\n"]
    if layout == "two_bases":
        # Dovecot-style names: the ,S= field differs, so do the base names.
        files = [("cur", f"{unique},S={len(bodies[0])}", ":2,"), ("new", f"{unique},S={len(bodies[1])}", None)]
    else:
        # The same base name in new/ and cur/ (a copy, not a rename: two inodes).
        files = [("cur", unique, ":2,S"), ("new", unique, None)]
    for (where, name, info), body in zip(files, bodies):
        srv.deliver(body, name=name, where=where, info=info)
    keep = srv.deliver(b"Subject: keep\n\nkept\n")
    md = srv.maildir()
    paths = [md / where / (name + (info or "")) for where, name, info in files]
    with srv.session() as c:
        assert c.stat()[0] == 3
        by_body = {c.retr(n): n for n in (1, 2, 3)}
        n = by_body[crlf(bodies[removed])]
        c.ok(f"DELE {n}")
        paths[removed].unlink()
        assert c.quit().startswith("+OK"), "a message already gone counts as deleted"
    assert paths[1 - removed].exists(), "the twin that was not deleted is gone"
    assert srv.find_message_file(keep) is not None
    with srv.session() as c:
        assert c.stat()[0] == 2
        assert sorted(c.retr(n) for n in (1, 2)) == sorted(
            [crlf(bodies[1 - removed]), crlf(b"Subject: keep\n\nkept\n")]
        )
        c.quit()


def test_implausible_sizes_in_names_are_not_believed(server):
    """Dovecot-style names whose ,S=/,W= sizes are beyond any real message (u64::MAX,
    two values that sum past 2^64, a huge W alone): the server stats and counts those
    files, so STAT, LIST and RETR agree on the real sizes (and nothing overflows: a debug
    build would panic), pipelined RETRs included."""
    srv = server()
    top, half = 2**64 - 1, 2**63
    bodies = [b"Subject: max\n\nu64 max\n", b"Subject: half\n\nhalf of 2^64\n",
              b"Subject: half again\n\nthe sum overflows\n", b"Subject: wide\n\nhuge W alone\n",
              b"Subject: over\n\njust over 4 GiB\n"]
    fields = [f"S={top},W={top}", f"S={half},W={half}", f"S={half},W={top}",
              f"S={len(bodies[3])},W={top}", f"S={2**32 + 1},W={2**32 + 1}"]
    for i, (body, f) in enumerate(zip(bodies, fields)):
        where, info = ("cur", ":2,S") if i % 2 else ("new", None)
        srv.deliver(body, name=f"{1700000300 + i}.M{i}P1.huge,{f}", where=where, info=info)
    sizes = {n: len(crlf(b)) for n, b in enumerate(bodies, 1)}
    for _ in range(2):
        with srv.session() as c:
            assert c.stat() == (len(bodies), sum(sizes.values()))
            assert c.list() == sizes
            for n, size in sizes.items():
                assert c.ok(f"LIST {n}") == f"+OK {n} {size}"
            c.send("".join(f"RETR {n}\r\n" for n in sizes))
            for n, body in enumerate(bodies, 1):
                assert c.readline() == f"+OK {sizes[n]} octets"
                assert c.read_body() == crlf(body)
            c.quit()


def _boundary_messages():
    """Messages whose interesting bytes fall on and around 4/8/16/32/64 KiB boundaries
    (where a streaming encoder switches buffers)."""
    msgs = {}
    hdr = b"Subject: boundary\n\n"
    for boundary in (4096, 8192, 16384, 32768, 65536, 131072):
        for d in (-2, -1, 0, 1, 2):
            pos = boundary + d
            # LF source: a dot-led line starting at file offset `pos`
            filler_len = pos - len(hdr) - 1  # minus the LF that ends the filler line
            lf = hdr + b"a" * filler_len + b"\n" + b".dot at boundary\n..\n.\nend\n"
            assert lf.index(b"\n.dot") + 1 == pos
            msgs[f"lf_dot_{boundary}{d:+d}"] = lf
            # CRLF source: the CR of a CRLF at offset `pos`, then a dot line
            crlf_src = hdr.replace(b"\n", b"\r\n")
            crlf_src += b"b" * (pos - len(crlf_src)) + b"\r\n.x\r\n"
            assert crlf_src.index(b"\r\n.x") == pos
            msgs[f"crlf_cr_{boundary}{d:+d}"] = crlf_src
    return msgs


BOUNDARY = _boundary_messages()


@pytest.fixture(scope="module")
def boundary_server(module_server):
    srv = module_server()
    srv.b_names = {k: srv.deliver(v) for k, v in BOUNDARY.items()}
    return srv


def test_stuffing_and_line_ends_at_buffer_boundaries(boundary_server):
    srv = boundary_server
    failures = []
    with srv.session() as c:
        uid_to_n = {uid: n for n, uid in c.uidl().items()}
        sizes = c.list()
        for key, src in BOUNDARY.items():
            n = uid_to_n.get(srv.b_names[key], list(BOUNDARY).index(key) + 1)
            body = c.retr(n)
            if body != crlf(src):
                exp = crlf(src)
                i = next((j for j in range(min(len(body), len(exp))) if body[j] != exp[j]), min(len(body), len(exp)))
                failures.append(f"{key}: first difference at {i}: got {body[i-8:i+12]!r} expected {exp[i-8:i+12]!r}")
            elif sizes[n] != len(body):
                failures.append(f"{key}: LIST {sizes[n]} != RETR {len(body)}")
            # TOP with a line count that ends right after the boundary line
            _, top = c.multi(f"TOP {n} 2")
            exp_top = b"Subject: boundary\r\n\r\n" + b"\r\n".join(crlf(src).split(b"\r\n\r\n", 1)[1].split(b"\r\n")[:2]) + b"\r\n"
            if top != exp_top:
                failures.append(f"{key}: TOP {n} 2 gave ...{top[-40:]!r}, expected ...{exp_top[-40:]!r}")
        c.quit()
    assert not failures, "\n".join(failures)


ODD = [b"Subject: cr\n\na\rb\n", b"Subject: crcrlf\n\nx\r\r\ny\n", b"Subject: endcr\n\nend with cr\r",
       b"\n\n\n", b"\r\n\r\n", b"Subject: dotcr\n\n.\r", b"Subject: lfcr\n\n\n\r\n\r", b"\r", b"\n",
       b"Subject: nul\n\nnul\x00byte\n"]


def test_sizes_consistent_for_odd_line_ends(server):
    """Whatever the server makes of bare CRs, LIST and STAT must match what RETR sends,
    and what it sends must be well-formed CRLF lines."""
    srv = server()
    for m in ODD:
        srv.deliver(m)
    problems = []
    with srv.session() as c:
        sizes = c.list()
        assert len(sizes) == len(ODD)
        for n in sorted(sizes):
            c.ok(f"RETR {n}")
            raw = c.read_multiline_raw()
            body = b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in raw)
            if sizes[n] != len(body):
                problems.append(f"{ODD[n - 1]!r}: LIST {sizes[n]} but RETR sent {len(body)} octets {body!r}")
            for l in raw:
                if b"\n" in l:
                    problems.append(f"{ODD[n - 1]!r}: bare LF inside a line {l!r}")
        c.quit()
    assert not problems, "\n".join(problems)


def test_failed_deletion_answers_sys_temp_and_loses_nothing(server):
    """A deletion that fails in UPDATE: QUIT answers -ERR [SYS/TEMP], the other marked
    message is still removed, and unmarked messages are untouched."""
    srv = server()
    first = srv.deliver(b"Subject: one\n\n1\n")
    stuck = srv.deliver(b"Subject: two\n\n2\n")
    kept = srv.deliver(b"Subject: three\n\n3\n")
    with srv.session() as c:
        uidls = c.uidl()
        c.ok("DELE 1")
        c.ok("DELE 2")
        # Another program puts a non-empty directory where message 2 was: unlink fails.
        path = srv.find_message_file(stuck)
        path.unlink()
        path.mkdir()
        (path / "blocker").write_bytes(b"x")
        r = c.cmd("QUIT")
        assert r.startswith("-ERR [SYS/TEMP]"), r
        c.expect_eof()
    assert srv.find_message_file(first) is None
    assert srv.find_message_file(kept) is not None
    with srv.session() as c:
        assert c.uidl() == {1: uidls[3]}
        assert c.retr(1) == crlf(b"Subject: three\n\n3\n")
        c.quit()
