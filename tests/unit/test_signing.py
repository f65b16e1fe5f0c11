"""DKIM signing, keys and rotation edits: pure tests, no network (keys come from a dict).

Verification here is dkimpy's; the independent verifier (OpenDKIM, with keys served by
DNS on loopback) is in tests/integration/test_dkim.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import shutil
import stat
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.dkim.keys import (
    NewIdentity,
    PolicyEditError,
    add_identity,
    finish_rotation,
    generate_key,
    key_file_name,
    next_selector,
    public_record,
    start_rotation,
    txt_strings,
    write_private_key,
    zone_line,
)
from gateway.dkim.signing import (
    DkimSigner,
    SigningKey,
    relaxed_body,
    sign_headers,
    signed_header_names,
    split_message,
)
from gateway.errors import PolicyError, SigningError
from gateway.policy.loader import load_policy_set
from gateway.policy.model import DealerPolicy, DkimSettings, PolicySet
from gateway.policy.store import PolicyStore
from tests.shipped import copy_shipped

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T = int(NOW.timestamp())

# One key per algorithm for the whole module: RSA key generation is the slow part.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()

PLAIN = (
    b"From: Example Motors <sales@example-motors.test>\r\nTo: <customer@example.org>\r\n"
    b"Subject: Your  test drive\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
    b"Message-ID: <t1@example-motors.test>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello,  \r\n\r\nBooked.\r\n\r\n\r\n"
)
EIGHT_BIT = PLAIN.replace(b"Booked.", "Votre essai est prêt, Zoë.".encode())
FOLDED = PLAIN.replace(
    b"Subject: Your  test drive\r\n",
    b"Subject: A long subject\r\n\tfolded onto\r\n  two more lines\r\n",
)
UNSUB = PLAIN.replace(
    b"MIME-Version",
    b"List-Unsubscribe: <https://u.test/x>, <mailto:u@u.test>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version",
)
EMPTY_BODY = PLAIN.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
SAMPLES = {"plain": PLAIN, "8bit": EIGHT_BIT, "folded": FOLDED, "unsub": UNSUB, "empty": EMPTY_BODY}


def rsa_pem(key: rsa.RSAPrivateKey = RSA_KEY) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def identity(selector: str = "mg1", **kw: object) -> DkimSettings:
    fields: dict[str, object] = {
        "domain": "example-motors.test",
        "selector": selector,
        "key_file": Path("unused.pem"),
    }
    fields.update(kw)
    return DkimSettings(**fields)  # type: ignore[arg-type]


def dns(records: dict[str, str]) -> Callable[..., bytes | None]:
    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return None if value is None else value.encode()

    return get_txt


RSA_DNS = dns({"mg1._domainkey.example-motors.test": public_record(RSA_KEY)})


def signature_fields(header: bytes) -> dict[bytes, bytes]:
    value = re.sub(rb"\s+", b"", header.split(b":", 1)[1])
    return dict(tuple(tag.split(b"=", 1)) for tag in value.split(b";") if tag)  # type: ignore[misc]


def signatures(message: bytes) -> list[bytes]:
    head = message.partition(b"\r\n\r\n")[0]
    return [m.group(0) for m in re.finditer(rb"DKIM-Signature:.*?(?=\r\n(?![ \t])|\Z)", head, re.S)]


# --- the signature itself ---


@pytest.mark.parametrize("data", SAMPLES.values(), ids=SAMPLES.keys())
def test_signature_is_byte_identical_to_dkimpy(data: bytes) -> None:
    ours = sign_headers(data, [SigningKey(identity(), RSA_KEY)], timestamp=T)
    headers, _ = dkim.rfc822_parse(data)
    include = list(signed_header_names(name for name, _ in headers))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dkim.time, "time", lambda: T)
        theirs = dkim.DKIM(data).sign(
            b"mg1",
            b"example-motors.test",
            rsa_pem(),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
    assert ours == theirs


@pytest.mark.parametrize("data", SAMPLES.values(), ids=SAMPLES.keys())
def test_signature_verifies_and_uses_relaxed_without_length(data: bytes) -> None:
    signed = sign_headers(data, [SigningKey(identity(), RSA_KEY)], timestamp=T) + data
    assert dkim.verify(signed, dnsfunc=RSA_DNS)
    tags = signature_fields(signatures(signed)[0])
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"example-motors.test" and tags[b"s"] == b"mg1"
    assert tags[b"t"] == str(T).encode()
    assert b"l" not in tags  # RFC 6376 §8.2: a length limit lets anyone append content


def test_relaxed_canonicalisation_survives_refolding_and_trailing_space() -> None:
    signed = sign_headers(PLAIN, [SigningKey(identity(), RSA_KEY)], timestamp=T) + PLAIN
    rewrapped = signed.replace(b"Subject: Your  test drive", b"Subject:  Your test\r\n drive")
    assert dkim.verify(rewrapped.replace(b"Booked.\r\n", b"Booked.  \r\n"), dnsfunc=RSA_DNS)


@pytest.mark.parametrize(
    "added",
    [
        b"From: Someone Else <ceo@example-motors.test>\r\n",
        b"To: victim@example.net\r\n",
        b"Subject: Urgent: wire money\r\n",
        b"Reply-To: attacker@example.net\r\n",
        b"Cc: list@example.net\r\n",
        b"List-Unsubscribe: <https://evil.test/>\r\n",
        b"Content-Type: text/html\r\n",
    ],
    ids=["from", "to", "subject", "reply-to", "cc", "list-unsubscribe", "content-type"],
)
def test_an_added_singleton_header_breaks_the_signature(added: bytes) -> None:
    # Replay and injection (draft-chuang-dkim-replay-problem): an attacker who holds one
    # signed message must not be able to add a header a mail client would display or use.
    signed = sign_headers(PLAIN, [SigningKey(identity(), RSA_KEY)], timestamp=T) + PLAIN
    assert dkim.verify(signed, dnsfunc=RSA_DNS)
    head, sep, body = signed.partition(b"\r\n\r\n")
    for tampered in (head + b"\r\n" + added[:-2] + sep + body, added + signed):
        assert not dkim.verify(tampered, dnsfunc=RSA_DNS)


def test_header_list_oversigns_present_and_absent_singletons() -> None:
    names = [b"From", b"To", b"To", b"Subject", b"X-Mailgate-Ref", b"Received", b"Sender"]
    h = signed_header_names(names)
    assert h.count(b"from") == 2 and h.count(b"to") == 3 and h.count(b"reply-to") == 1
    assert h.count(b"sender") == 2 and h.count(b"x-mailgate-ref") == 1
    assert b"received" not in h and b"list-id" not in h
    assert h.count(b"list-unsubscribe-post") == 1


def test_ed25519_signature_follows_rfc8463() -> None:
    data = PLAIN
    key = SigningKey(identity("ed1", algorithm="ed25519-sha256"), ED_KEY)
    header = sign_headers(data, [key], timestamp=T)
    tags = signature_fields(header)
    assert tags[b"a"] == b"ed25519-sha256"
    # Recompute the signed data with dkimpy and check the signature with the public key:
    # Ed25519 signs the SHA-256 of the canonicalised headers (RFC 8463 §3).
    headers, _ = dkim.rfc822_parse(data)
    canon = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    hasher = hashlib.sha256()
    sig_header = (b"DKIM-Signature", header.split(b":", 1)[1])
    include = tags[b"h"].split(b":")
    dkim.hash_headers(hasher, canon, canon.canonicalize_headers(headers), include, sig_header, None)
    ED_KEY.public_key().verify(base64.b64decode(tags[b"b"]), hasher.digest())


def test_unparseable_header_is_a_signing_error() -> None:
    with pytest.raises(SigningError, match="cannot be parsed"):
        sign_headers(b"not a header line\r\n\r\nbody\r\n", [SigningKey(identity(), RSA_KEY)],
                     timestamp=T)  # fmt: skip


# --- the signer: which keys, when, and failures ---


def write_pem(path: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def dealer(*identities: DkimSettings, dealer_id: str = "example-motors") -> DealerPolicy:
    return DealerPolicy(
        dealer_id=dealer_id,  # type: ignore[arg-type]
        name=dealer_id,
        auth_users=frozenset(),
        from_domains=frozenset({"example-motors.test"}),
        contacts=(),
        checks={},
        dkim=identities,
    )


def store_of(*dealers: DealerPolicy) -> PolicyStore:
    policy_set = PolicySet(
        defaults={}, dealers={d.dealer_id: d for d in dealers}, source_dir=Path(".")
    )
    return PolicyStore(Path("."), initial=policy_set, loader=lambda _d: store_set(dealers))


def store_set(dealers: tuple[DealerPolicy, ...]) -> PolicySet:
    return PolicySet(defaults={}, dealers={d.dealer_id: d for d in dealers}, source_dir=Path("."))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return {
        "rsa": write_pem(tmp_path / "rsa.pem", RSA_KEY),
        "ed": write_pem(tmp_path / "ed.pem", ED_KEY),
        "rsa2": write_pem(tmp_path / "rsa2.pem", generate_key("rsa")),
    }


def test_dealer_without_dkim_is_relayed_unsigned_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = dealer()
    signer = DkimSigner(store_of(d), FakeClock(NOW))
    with caplog.at_level(logging.WARNING, logger="gateway.dkim.signing"):
        assert signer.sign(PLAIN, d) == PLAIN
        assert signer.sign(PLAIN, d) == PLAIN
    assert [r.getMessage() for r in caplog.records] == [
        "dealer=example-motors has no DKIM settings: its mail is relayed unsigned"
    ]


def test_rsa_and_ed25519_sign_in_policy_order(keys: dict[str, Path]) -> None:
    d = dealer(
        identity("mg1", key_file=keys["rsa"]),
        identity("ed1", key_file=keys["ed"], algorithm="ed25519-sha256"),
    )
    signed = DkimSigner(store_of(d), FakeClock(NOW)).sign(PLAIN, d)
    assert signed.endswith(PLAIN)
    found = [signature_fields(s) for s in signatures(signed)]
    assert [(f[b"s"], f[b"a"]) for f in found] == [
        (b"mg1", b"rsa-sha256"),
        (b"ed1", b"ed25519-sha256"),
    ]
    assert found[0][b"bh"] == found[1][b"bh"]
    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=RSA_DNS)


def test_copies_of_one_submission_share_one_body_hash(keys: dict[str, Path]) -> None:
    # Each recipient's copy has its own header fields (To:, X-Mailgate-Ref) and the same body.
    d = dealer(identity("mg1", key_file=keys["rsa"]))
    signer = DkimSigner(store_of(d), FakeClock(NOW))
    copies = [
        PLAIN.replace(b"To: <customer@example.org>", f"To: <c{n}@example.org>".encode()).replace(
            b"MIME-Version", f"X-Mailgate-Ref: r{n}\r\nMIME-Version".encode()
        )
        for n in range(3)
    ]
    signed = [signer.sign(copy, d) for copy in copies]
    assert signer.body_hashes.computed == 1
    for message in signed:
        assert dkim.DKIM(message).verify(dnsfunc=RSA_DNS)
    assert len({signature_fields(signatures(m)[0])[b"b"] for m in signed}) == 3
    other = signer.sign(EIGHT_BIT, d)  # another body: hashed afresh, and right
    assert signer.body_hashes.computed == 2
    assert dkim.DKIM(other).verify(dnsfunc=RSA_DNS)
    assert (
        signer.sign(PLAIN, d)
        == sign_headers(
            PLAIN, [SigningKey(identity("mg1", key_file=keys["rsa"]), RSA_KEY)], timestamp=T
        )
        + PLAIN
    )


def test_signer_uses_only_the_given_dealers_identities(keys: dict[str, Path]) -> None:
    ours = dealer(identity("mg1", key_file=keys["rsa"]))
    rival = dealer(
        identity("r1", domain="rival-motors.test", key_file=keys["rsa2"]), dealer_id="rival"
    )
    signer = DkimSigner(store_of(ours, rival), FakeClock(NOW))
    for d, domain in ((ours, b"example-motors.test"), (rival, b"rival-motors.test")):
        found = [signature_fields(s) for s in signatures(signer.sign(PLAIN, d))]
        assert [f[b"d"] for f in found] == [domain]


def test_rotation_both_sign_until_retire_at_then_only_the_new(keys: dict[str, Path]) -> None:
    retire = NOW + timedelta(hours=72)
    d = dealer(
        identity("mg1", key_file=keys["rsa"], retire_at=retire),
        identity("mg2", key_file=keys["rsa2"]),
    )
    clock = FakeClock(NOW)
    signer = DkimSigner(store_of(d), clock)

    def selectors() -> list[bytes]:
        return [signature_fields(s)[b"s"] for s in signatures(signer.sign(PLAIN, d))]

    assert selectors() == [b"mg1", b"mg2"]
    clock.set(retire - timedelta(seconds=1))
    assert selectors() == [b"mg1", b"mg2"]
    clock.set(retire)
    assert selectors() == [b"mg2"]


def test_every_identity_retired_refuses_rather_than_relay_unsigned(keys: dict[str, Path]) -> None:
    d = dealer(identity("mg1", key_file=keys["rsa"], retire_at=NOW))
    with pytest.raises(SigningError, match="retired"):
        DkimSigner(store_of(d), FakeClock(NOW)).sign(PLAIN, d)


@pytest.mark.parametrize(
    ("content", "algorithm", "match"),
    [
        (None, "rsa-sha256", "cannot be read"),
        (b"garbage", "rsa-sha256", "not an unencrypted PEM key"),
        ("ed", "rsa-sha256", "not an RSA key"),
        ("rsa", "ed25519-sha256", "not an Ed25519 key"),
    ],
    ids=["missing", "garbage", "ed-as-rsa", "rsa-as-ed"],
)
def test_unusable_key_is_a_signing_error(
    tmp_path: Path,
    keys: dict[str, Path],
    content: bytes | str | None,
    algorithm: str,
    match: str,
) -> None:
    path = tmp_path / "key.pem"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        shutil.copy(keys[content], path)
    d = dealer(identity("mg1", key_file=path, algorithm=algorithm))
    with pytest.raises(SigningError, match=match):
        DkimSigner(store_of(d), FakeClock(NOW)).sign(PLAIN, d)


def test_keys_are_cached_until_the_policy_set_changes(keys: dict[str, Path]) -> None:
    d = dealer(identity("mg1", key_file=keys["rsa"]))
    store = store_of(d)
    signer = DkimSigner(store, FakeClock(NOW))
    signer.sign(PLAIN, d)
    keys["rsa"].unlink()
    signer.sign(PLAIN, d)  # the parsed key is cached: no file access per message
    assert store.reload().ok
    with pytest.raises(SigningError, match="cannot be read"):
        signer.sign(PLAIN, store.current.dealers[d.dealer_id])


# --- keys, records and policy-file edits ---


def test_rsa_record_is_the_spki_and_splits_into_255_octet_strings() -> None:
    record = public_record(RSA_KEY)
    assert record.startswith("v=DKIM1; k=rsa; p=MIIB")
    der = base64.b64decode(record.partition("p=")[2])
    assert serialization.load_der_public_key(der).public_numbers() == (  # type: ignore[union-attr]
        RSA_KEY.public_key().public_numbers()
    )
    strings = txt_strings(record)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == record
    line = zone_line("mg1", "example-motors.test", record)
    assert line.startswith('mg1._domainkey.example-motors.test. 3600 IN TXT ( "v=DKIM1; k=rsa;')
    assert dkim.verify(
        sign_headers(PLAIN, [SigningKey(identity(), RSA_KEY)], timestamp=T) + PLAIN,
        dnsfunc=dns({"mg1._domainkey.example-motors.test": record}),
    )


def test_ed25519_record_is_the_raw_public_key() -> None:
    record = public_record(ED_KEY)
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    raw = ED_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert base64.b64decode(record.partition("p=")[2]) == raw
    assert txt_strings(record) == [record]


def test_private_key_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / key_file_name("example-motors.test", "mg1").split("/")[1]
    write_private_key(path, ED_KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private_key(path, generate_key("ed25519"))
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("current", "taken", "expected"),
    [
        ("mg1", set(), "mg2"),
        ("mg9", {"mg10"}, "mg11"),
        ("s2025", set(), "s2026"),
        ("mg01", set(), "mg02"),
        ("crm", set(), "crm2"),
        ("crm", {"crm2", "crm3"}, "crm4"),
    ],
)
def test_next_selector(current: str, taken: set[str], expected: str) -> None:
    assert next_selector(current, taken) == expected


DEALER_FILE = """\
dealer_id = "example-motors"
name = "Example Motors"

# The main key.
[dkim]
domain = "example-motors.test"
selector = "mg1"   # published 2025
key_file = "keys/mg1.pem"

# Overrides.
[checks]
multiple-from = { action = "hold" }
"""
MG2 = NewIdentity("example-motors.test", "mg2", "keys/mg2.pem", "rsa-sha256")


def test_start_rotation_keeps_comments_and_adds_the_new_entry_after_the_old() -> None:
    retire = datetime(2026, 3, 1, tzinfo=UTC)
    edited = start_rotation(DEALER_FILE, "mg1", retire, MG2)
    data = tomllib.loads(edited)
    assert data["dkim"] == [
        {
            "domain": "example-motors.test",
            "selector": "mg1",
            "key_file": "keys/mg1.pem",
            "retire_at": retire,
        },
        {"domain": "example-motors.test", "selector": "mg2", "key_file": "keys/mg2.pem"},
    ]
    assert data["checks"] == {"multiple-from": {"action": "hold"}}
    assert "# The main key.\n[[dkim]]\n" in edited and "# published 2025" in edited
    assert "retire_at = 2026-03-01T00:00:00Z" in edited
    with pytest.raises(PolicyEditError, match="already retiring"):
        start_rotation(edited, "mg1", retire, MG2)


def test_finish_rotation_removes_only_entries_whose_time_has_passed() -> None:
    retire = datetime(2026, 3, 1, tzinfo=UTC)
    edited = start_rotation(DEALER_FILE, "mg1", retire, MG2)
    same, removed = finish_rotation(edited, retire - timedelta(seconds=1))
    assert same == edited and removed == []
    done, removed = finish_rotation(edited, retire)
    assert [e["selector"] for e in removed] == ["mg1"]
    data = tomllib.loads(done)
    assert [e["selector"] for e in data["dkim"]] == ["mg2"]
    assert data["checks"] == {"multiple-from": {"action": "hold"}}
    assert "# Overrides.\n[checks]" in done


def test_add_identity_to_a_file_without_dkim() -> None:
    text = 'dealer_id = "x"\nname = "X"\n[checks]\nmultiple-from = { action = "hold" }'
    data = tomllib.loads(add_identity(text, MG2))
    assert data["dkim"] == [
        {"domain": "example-motors.test", "selector": "mg2", "key_file": "keys/mg2.pem"}
    ]
    assert data["checks"] == {"multiple-from": {"action": "hold"}}


def test_inline_dkim_tables_are_left_to_the_operator() -> None:
    text = 'dealer_id = "x"\ndkim = { domain = "a.test", selector = "mg1", key_file = "k" }\n'
    with pytest.raises(PolicyEditError, match="inline"):
        start_rotation(text, "mg1", NOW, MG2)


# --- the policy schema for DKIM ---


def policy_dir(tmp_path: Path, dkim_toml: str, rival: str = "") -> Path:
    target = copy_shipped(tmp_path / "policies")
    write_pem(target / "k.pem", RSA_KEY)
    path = target / "dealers" / "example-motors.toml"
    path.write_text(path.read_text() + "\n" + dkim_toml)
    if rival:
        (target / "dealers" / "rival-motors.toml").write_text(rival)
    return target


def test_retire_at_loads_as_an_aware_datetime(tmp_path: Path) -> None:
    directory = policy_dir(
        tmp_path,
        '[dkim]\ndomain = "example-motors.test"\nselector = "mg1"\nkey_file = "k.pem"\n'
        "retire_at = 2026-03-01T00:00:00Z\n",
    )
    (ident,) = load_policy_set(directory).dealers["example-motors"].dkim  # type: ignore[index]
    assert ident.retire_at == datetime(2026, 3, 1, tzinfo=UTC)
    assert ident.key_file == directory / "k.pem"


@pytest.mark.parametrize(
    ("dkim_toml", "rival", "message"),
    [
        (
            '[dkim]\ndomain = "example-motors.test"\nselector = "mg1"\nkey_file = "k.pem"\n'
            "retire_at = 2026-03-01T00:00:00\n",
            "",
            "needs a time zone",
        ),
        (
            '[dkim]\ndomain = "rival-motors.test"\nselector = "mg1"\nkey_file = "k.pem"\n',
            'dealer_id = "rival-motors"\nname = "Rival"\nauth_users = ["rival-crm"]\n'
            'from_domains = ["rival-motors.test"]\n',
            "is a sending domain of dealer 'rival-motors'",
        ),
    ],
    ids=["naive-retire-at", "other-dealers-domain"],
)
def test_dkim_policy_problems(tmp_path: Path, dkim_toml: str, rival: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_set(policy_dir(tmp_path, dkim_toml, rival))
    assert any(message in p.message for p in caught.value.problems), caught.value.problems


# --- the faster canonicalisation is dkimpy's, byte for byte ---

_PIECES = st.sampled_from([b"a", b"bc", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"\xc3\xa9"])
_CANON = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


@given(st.lists(_PIECES, max_size=60).map(b"".join))
def test_relaxed_body_equals_dkimpy(body: bytes) -> None:
    crlf_body = re.sub(rb"\r?\n", b"\r\n", body)  # rfc822_parse hands over CRLF bodies
    assert relaxed_body(crlf_body) == _CANON.canonicalize_body(crlf_body)


_HEADER_LINES = st.sampled_from(
    [b"From: a@b.test", b"To: c@d.test", b"Subject:  x\t y ", b"\tfolded", b" more", b""]
)


@given(st.lists(_HEADER_LINES, max_size=8), st.lists(_PIECES, max_size=20).map(b"".join),
       st.sampled_from([b"\r\n", b"\n"]))  # fmt: skip
def test_split_message_equals_dkimpy(lines: list[bytes], body: bytes, eol: bytes) -> None:
    message = eol.join(lines) + eol + body
    try:
        expected = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError) as exc:  # IndexError: a leading fold
        with pytest.raises(type(exc)):
            split_message(message)
        with pytest.raises(SigningError):
            sign_headers(message, [SigningKey(identity(), ED_KEY)], timestamp=T)
        return
    assert split_message(message) == expected
