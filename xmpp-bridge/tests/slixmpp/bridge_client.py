"""A standard XMPP client (slixmpp) logged into tern-bridge, chatting with
a `tern` user: a message asking for a receipt, the receipt, a correction
and a reaction, both ways, as the XEPs define them (no client-side
encryption: the bridge does that).

Then the archive (XEP-0313, from the bridge's decrypted store) and
message carbons (XEP-0280) between two clients of the bridge.

Usage: bridge_client.py HOST PORT JID PASSWORD CERT PEER MARKER
Exits 0 when every step passed; prints one line per step.
"""

import asyncio
import logging
import sys
import xml.etree.ElementTree as ET

from recorder import TIMEOUT, RecordingClient, step

HOST, PORT, JID, PASSWORD, CERT, PEER, MARKER = sys.argv[1:8]
RECEIPTS = "urn:xmpp:receipts"
MAM = "urn:xmpp:mam:2"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
CORRECTION = "urn:xmpp:message-correct:0"
REACTIONS = "urn:xmpp:reactions:0"


class Client(RecordingClient):
    """alice on the bridge, talking to PEER."""

    def __init__(self, resource="slixmpp"):
        super().__init__(f"{JID}/{resource}", PASSWORD, CERT)

    def send_chat(self, msg_id, body=None, *extensions):
        msg = self.make_message(mto=PEER, mbody=body, mtype="chat")
        msg["id"] = msg_id
        for extension in extensions:
            msg.append(ET.fromstring(extension))
        msg.send()


def child(msg, name, ns):
    return msg.xml.find(f"{{{ns}}}{name}")


async def main():
    alice = Client()
    await alice.start(HOST, PORT)
    step("logged into the bridge over STARTTLS with the bridge password")

    alice.send_chat("m1", f"hello bob {MARKER}", f"<request xmlns='{RECEIPTS}'/>")
    step("sent a message asking for a receipt")

    answer = await alice.wait_for("bob's answer", lambda m: m["body"].startswith("hello alice") and child(m, "replace", CORRECTION) is None)
    assert answer["from"].bare == PEER, answer["from"]
    step("bob's answer arrived as a chat message from his JID")

    receipt = await alice.wait_for("the receipt", lambda m: child(m, "received", RECEIPTS) is not None)
    assert child(receipt, "received", RECEIPTS).get("id") == "m1", str(receipt)
    step("bob's receipt names our message m1")

    alice.send_chat("m2", f"hello bob! {MARKER}", f"<replace xmlns='{CORRECTION}' id='m1'/>")
    alice.send_chat("m3", None, f"<reactions xmlns='{REACTIONS}' id='{answer['id']}'><reaction>🎉</reaction></reactions>")
    step("sent a correction of m1 and a reaction to bob's answer")

    corrected = await alice.wait_for("bob's correction", lambda m: child(m, "replace", CORRECTION) is not None)
    assert child(corrected, "replace", CORRECTION).get("id") == answer["id"], str(corrected)
    assert corrected["body"] == "hello alice!", str(corrected)
    reaction = await alice.wait_for("bob's reaction", lambda m: child(m, "reactions", REACTIONS) is not None)
    reactions = child(reaction, "reactions", REACTIONS)
    assert reactions.get("id") == "m1", str(reaction)
    assert [r.text for r in reactions] == ["👍"], str(reaction)
    step("bob's correction and reaction arrived as such, naming our ids")

    # The archive of the conversation, newest page, from the bridge's store.
    iq = alice.make_iq_set(ito=None)
    iq.append(ET.fromstring(
        f"<query xmlns='{MAM}' queryid='h1'><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
        f"<field var='with'><value>{PEER}</value></field></x>"
        "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/></set></query>"))
    answer = await iq.send(timeout=TIMEOUT)
    fin = answer.xml.find(f"{{{MAM}}}fin")
    assert fin is not None and fin.get("complete") == "true", str(answer)
    archived = [m for m in alice.messages if m.xml.find(f"{{{MAM}}}result") is not None]
    bodies = [r.xml.find(f".//{{{FORWARD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body") for r in archived]
    texts = [b.text for b in bodies if b is not None]
    assert f"hello bob {MARKER}" in texts and "hello alice" in texts, texts
    step(f"the archive holds the conversation ({len(archived)} messages)")

    # A second client with carbons sees what the first one sends.
    second = Client("second")
    await second.start(HOST, PORT)
    enable = second.make_iq_set()
    enable.append(ET.fromstring(f"<enable xmlns='{CARBONS}'/>"))
    await enable.send(timeout=TIMEOUT)
    alice.send_chat("m4", f"carbon {MARKER}")
    carbon = await second.wait_for("the carbon", lambda m: m.xml.find(f"{{{CARBONS}}}sent") is not None)
    body = carbon.xml.find(f".//{{{FORWARD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body")
    assert body is not None and body.text == f"carbon {MARKER}", str(carbon)
    step("a second client with carbons got a copy of what the first sent")

    for client in (alice, second):
        client.disconnect()
        await client.disconnected


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(asyncio.wait_for(main(), 150))
    print("all steps passed")
