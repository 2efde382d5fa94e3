"""A standard XMPP client (slixmpp) against tern-server.

Registers two accounts in-band (XEP-0077), subscribes them to each other,
exchanges messages that carry an OMEMO-style <encrypted/> payload, checks
that a plain body is refused with policy-violation, and publishes and
fetches PEP items with publish-options (XEP-0163/XEP-0060).

Usage: standard_client.py HOST PORT DOMAIN CA_FILE
Exits 0 when every step passed; prints one line per step.
"""

import asyncio
import logging
import secrets
import sys
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from clients import OMEMO_NS, STANZAS_NS, STEP_TIMEOUT, Client as BaseClient, step, wait_for

HOST, PORT, DOMAIN, CA_FILE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def Client(jid, password, register=False):
    return BaseClient(jid, password, HOST, PORT, CA_FILE, register=register)


async def main():
    suffix = secrets.token_hex(3)
    alice_jid, bob_jid = f"alice{suffix}@{DOMAIN}", f"bob{suffix}@{DOMAIN}"

    # In-band registration of both accounts.
    for jid in (alice_jid, bob_jid):
        client = Client(jid, "secret-" + suffix, register=True)
        client.open()
        await asyncio.wait_for(client.registered, STEP_TIMEOUT)
        await asyncio.wait_for(client.online, STEP_TIMEOUT)
        client.disconnect()
        await client.disconnected
        step(f"registered {jid} in-band and logged in")

    alice = Client(alice_jid, "secret-" + suffix)
    bob = Client(bob_jid, "secret-" + suffix)
    await alice.start()
    await bob.start()
    step("both logged in over STARTTLS")

    # Subscription: slixmpp authorises and subscribes back by default.
    alice.send_presence_subscription(pto=bob_jid)
    await wait_for(
        lambda: alice.client_roster[bob_jid]["subscription"] == "both"
        and bob.client_roster[alice_jid]["subscription"] == "both",
        "mutual subscription",
    )
    step("subscription is 'both' on both sides")

    # Encrypted messages both ways.
    ciphertext = secrets.token_urlsafe(24)
    alice.send_encrypted(bob_jid, ciphertext)
    got = await asyncio.wait_for(bob.messages.get(), STEP_TIMEOUT)
    assert got["from"].bare == alice_jid, got["from"]
    assert ciphertext in str(got), "payload delivered intact"
    bob.send_encrypted(alice_jid, "cmVwbHk=")
    got = await asyncio.wait_for(alice.messages.get(), STEP_TIMEOUT)
    assert got["from"].bare == bob_jid
    step("encrypted messages exchanged both ways")

    # A plain body is refused.
    alice.make_message(mto=bob_jid, mbody="plain text", mtype="chat").send()
    err = await asyncio.wait_for(alice.errors.get(), STEP_TIMEOUT)
    # slixmpp's condition accessor predates RFC 6120's policy-violation.
    assert err["error"].xml.find(f"{{{STANZAS_NS}}}policy-violation") is not None, err
    assert "end-to-end encryption" in err["error"]["text"], err
    try:
        leaked = await asyncio.wait_for(bob.messages.get(), 0.5)
        raise AssertionError(f"plain message delivered: {leaked}")
    except asyncio.TimeoutError:
        pass
    step("plain body refused with policy-violation")

    # PEP: an OMEMO device list with publish-options, fetched by the contact.
    options = alice["xep_0004"].make_form(ftype="submit")
    options.add_field(var="FORM_TYPE", ftype="hidden",
                      value="http://jabber.org/protocol/pubsub#publish-options")
    options.add_field(var="pubsub#access_model", value="open")
    options.add_field(var="pubsub#max_items", value="max")
    devices = ET.fromstring(f"<list xmlns='{OMEMO_NS}'><device id='12345'/></list>")
    await alice["xep_0060"].publish(None, f"{OMEMO_NS}.devicelist", id="current",
                                    payload=devices, options=options)
    result = await bob["xep_0060"].get_items(alice_jid, f"{OMEMO_NS}.devicelist")
    items = result["pubsub"]["items"]
    assert len(items) == 1, str(result)
    assert "12345" in str(items), str(result)
    step("PEP item published with publish-options and fetched by the contact")

    # A stranger can read the open node but not a presence-only one.
    await alice["xep_0060"].publish(None, "urn:example:private", id="p",
                                    payload=ET.fromstring("<p xmlns='urn:example:private'/>"))
    stranger = Client(f"carol{suffix}@{DOMAIN}", "secret-" + suffix, register=True)
    stranger.open()
    await asyncio.wait_for(stranger.online, STEP_TIMEOUT)
    await stranger["xep_0060"].get_items(alice_jid, f"{OMEMO_NS}.devicelist")
    try:
        await stranger["xep_0060"].get_items(alice_jid, "urn:example:private")
        raise AssertionError("presence-only node readable by a stranger")
    except IqError as e:
        assert e.iq["error"]["condition"] == "forbidden", e.iq
    step("access models enforced (open readable, presence-only forbidden to strangers)")

    for client in (alice, bob, stranger):
        await client.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(asyncio.wait_for(main(), 120))
    print("all steps passed")
