"""``tlslogd advise`` on the run's maillog, its policy fragment loaded into the real Postfix:
mail still reaches every destination it proposes to enforce TLS for, over TLS.

This sends more mail, so it runs after every other end-to-end test (see conftest)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import Message, Run, send
from tests.e2e.harness import PEERS, Swaks, swaks_prefix, tlslogd_json

pytestmark = [pytest.mark.e2e, pytest.mark.after_traffic]

# what the run's evidence supports, by the kind of remote server (harness.PEERS)
EXPECTED = {
    "tls": ("secure", "encrypt"),  # Trusted, but known by address only: encrypt for now
    "reuse": ("secure", "encrypt"),
    "v6": ("secure", "encrypt"),
    "verified": ("secure", None),  # already under 'secure match=': keep it
    "selfsigned": ("encrypt", "encrypt"),  # Untrusted
    "tls12": ("encrypt", "encrypt"),  # anonymous cipher
    "offering": ("remove_none", "may"),  # offered STARTTLS under our 'none'
}


def advice(run: Run) -> dict[str, Any]:
    return tlslogd_json(
        "advise",
        "--local-networks",
        "",
        "--min-deliveries",
        "1",
        "--min-days",
        "1",
        str(run.maillog),
    )


def test_advised_policies_still_deliver_over_tls(run: Run) -> None:
    port = run.lab.ports.sink
    proposals = {p["destination"]: p for p in advice(run)["proposals"]}
    by_kind = {
        kind: (proposals[key]["level"], proposals[key]["policy"])
        for kind, peer in PEERS.items()
        if (key := peer.nexthop(port)) in proposals and proposals[key]["level"] != "may"
    }
    assert by_kind == EXPECTED

    # the fragment's entries replace the lab's own for the same next hops
    policy_file = run.lab.main.config_dir / "tls_policy"
    entries = dict(line.split(None, 1) for line in policy_file.read_text().splitlines())
    for kind, (_, policy) in EXPECTED.items():
        if policy is not None:
            entries[PEERS[kind].nexthop(port)] = policy
    policy_file.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    run.lab.main.postfix("reload")
    time.sleep(1)  # the reloaded master starts new smtp processes with the new table

    log = run.lab.main.maillog
    start = log.stat().st_size
    swaks = Swaks(run.artifacts / "swaks-advice", swaks_prefix() or [])
    for kind in EXPECTED:
        send(swaks, run.lab, Message(f"advised-{kind}", kind))
    run.lab.wait_idle(timeout=60)
    with log.open("rb") as f:
        f.seek(start)
        new = f.read().decode()
    for kind in EXPECTED:  # every one of them offers STARTTLS
        relay = run.lab.relay(kind)
        sent = [
            line
            for line in new.splitlines()
            if f"to=<advised-{kind}@" in line and f"relay={relay}," in line
        ]
        assert sent and all("status=sent" in line for line in sent), (kind, sent)
        handshakes = (f"TLS connection established to {relay}", f"TLS connection reused to {relay}")
        assert any(h in new for h in handshakes), kind
