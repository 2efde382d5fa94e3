"""Two standard clients (slixmpp) on two federating servers: a Tern user
and a user of another server (Prosody, ejabberd). They subscribe to each
other's presence and exchange messages carrying an OMEMO-style encrypted
payload in both directions; the payload must arrive intact, from the
right JID.

Usage: federated_clients.py CA_FILE PASSWORD  JID HOST PORT  JID HOST PORT
(the Tern user first). Exits 0 when every step passed; prints one line
per step.
"""

import asyncio
import logging
import secrets
import sys

from clients import Client, step, wait_for

CA_FILE, PASSWORD = sys.argv[1], sys.argv[2]
TERN = sys.argv[3:6]
PEER = sys.argv[6:9]
# Federation links come up on first use: allow for DNS, TLS and dialback.
FEDERATION_TIMEOUT = 30


async def receive(client, sender, ciphertext):
    """The next chat message `client` receives, which must come from
    `sender` and carry `ciphertext` intact."""
    got = await asyncio.wait_for(client.messages.get(), FEDERATION_TIMEOUT)
    assert got["from"].bare == sender, f"from {got['from']}, not {sender}"
    assert ciphertext in str(got), f"payload not intact: {got}"


async def main():
    tern = Client(TERN[0], PASSWORD, TERN[1], TERN[2], CA_FILE)
    peer = Client(PEER[0], PASSWORD, PEER[1], PEER[2], CA_FILE)
    await tern.start()
    await peer.start()
    tern_jid, peer_jid = tern.boundjid.bare, peer.boundjid.bare
    step(f"{tern_jid} and {peer_jid} logged in")

    # The peer's user asks; slixmpp approves and asks back by default.
    peer.send_presence_subscription(pto=tern_jid)
    await wait_for(
        lambda: peer.client_roster[tern_jid]["subscription"] == "both"
        and tern.client_roster[peer_jid]["subscription"] == "both",
        "mutual subscription across the federation",
        FEDERATION_TIMEOUT,
    )
    step("subscription is 'both' on both servers")

    for n in range(3):
        to_peer, to_tern = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        tern.send_encrypted(peer_jid, to_peer)
        await receive(peer, tern_jid, to_peer)
        peer.send_encrypted(tern_jid, to_tern)
        await receive(tern, peer_jid, to_tern)
    step("encrypted messages exchanged both ways, three times")

    for client in (tern, peer):
        await client.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(asyncio.wait_for(main(), 150))
    print("all steps passed")
