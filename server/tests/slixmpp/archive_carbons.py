"""Message Carbons (XEP-0280) and the message archive (XEP-0313) as a
standard client uses them, with OMEMO-style encrypted messages.

alice has two clients with carbons on; bob writes to one of them, the
other gets a `received` carbon; alice writes from one, the other gets a
`sent` carbon. Then the archive: paging with RSM forwards and from the
end, `with`, the extended `after-id`/`ids` fields, a forged stanza-id
dropped, metadata, and nothing archived for a plain body.

Usage: archive_carbons.py HOST PORT DOMAIN CA_FILE
"""

import asyncio
import sys

from clients import (STEP_TIMEOUT, Scenario, expect_error, nothing_arrives, omemo_payload,
                     run, step)

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
CARBONS = "urn:xmpp:carbons:2"
SID = "urn:xmpp:sid:0"


def form(fields):
    values = "".join(
        f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in (vals if isinstance(vals, list) else [vals])) + "</field>"
        for var, vals in fields.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{MAM}</value></field>{values}</x>")


async def query(client, queryid, fields=None, rsm="", extra=""):
    """Runs a MAM query; (ciphertexts in order, result ids, fin)."""
    results = client.collect(f"{{jabber:client}}message/{{{MAM}}}result")
    payload = f"<query xmlns='{MAM}' queryid='{queryid}'>{form(fields or {})}{rsm}{extra}</query>"
    answer = await client.request(payload, itype="set")
    fin = answer.xml.find(f"{{{MAM}}}fin")
    assert fin is not None, answer
    found, ids = [], []
    while not results.empty():
        message = results.get_nowait()
        result = message.xml.find(f"{{{MAM}}}result")
        assert result.get("queryid") == queryid, message
        payload = result.find(".//{eu.siacs.conversations.axolotl}payload")
        found.append(payload.text)
        ids.append(result.get("id"))
    client.remove_handler(f"{{jabber:client}}message/{{{MAM}}}result")
    return found, ids, fin


def chat(client, to, text, extra=None):
    message = client.make_message(mto=to, mbody="I sent you an OMEMO encrypted message.", mtype="chat")
    message.append(omemo_payload(text))
    if extra is not None:
        message.append(extra)
    message.send()


async def main():
    s = Scenario(sys.argv)
    alice_jid, bob_jid = await s.register("alice", "bob")
    phone = await s.login(alice_jid + "/phone", ["xep_0280"])
    desk = await s.login(alice_jid + "/desk", ["xep_0280"])
    bob = await s.login(bob_jid + "/laptop")
    for client in (phone, desk):
        await client["xep_0280"].enable()
    step("carbons enabled on alice's two clients")

    desk_received = desk.collect(f"{{jabber:client}}message/{{{CARBONS}}}received")
    desk_sent = desk.collect(f"{{jabber:client}}message/{{{CARBONS}}}sent")
    chat(bob, alice_jid + "/phone", "msg-1")
    got = await asyncio.wait_for(phone.messages.get(), STEP_TIMEOUT)
    assert "msg-1" in str(got), got
    stanza_id = got.xml.find(f"{{{SID}}}stanza-id")
    assert stanza_id is not None and stanza_id.get("by") == alice_jid, got
    carbon = await asyncio.wait_for(desk_received.get(), STEP_TIMEOUT)
    assert carbon["from"] == alice_jid and "msg-1" in str(carbon), carbon
    step("a message to alice's phone arrives with a stanza-id; her desk gets a 'received' carbon")

    chat(phone, bob_jid, "msg-2")
    got = await asyncio.wait_for(bob.messages.get(), STEP_TIMEOUT)
    assert "msg-2" in str(got)
    carbon = await asyncio.wait_for(desk_sent.get(), STEP_TIMEOUT)
    assert "msg-2" in str(carbon), carbon
    step("a message from alice's phone reaches bob; her desk gets a 'sent' carbon")

    private = "<private xmlns='urn:xmpp:carbons:2'/>"
    import xml.etree.ElementTree as ET
    chat(phone, bob_jid, "msg-3", ET.fromstring(private))
    await asyncio.wait_for(bob.messages.get(), STEP_TIMEOUT)
    await nothing_arrives(desk_sent, "a carbon of a <private/> message")
    await desk["xep_0280"].disable()
    chat(bob, alice_jid + "/phone", "msg-4")
    await asyncio.wait_for(phone.messages.get(), STEP_TIMEOUT)
    await nothing_arrives(desk_received, "a carbon after disable")
    step("no carbons for <private/> messages nor after disable")

    # A forged stanza-id claiming to be alice's archive is dropped.
    forged = ET.fromstring(f"<stanza-id xmlns='{SID}' by='{alice_jid}' id='forged'/>")
    chat(bob, alice_jid + "/phone", "msg-5", forged)
    got = await asyncio.wait_for(phone.messages.get(), STEP_TIMEOUT)
    ids = [e.get("id") for e in got.xml.findall(f"{{{SID}}}stanza-id")]
    assert len(ids) == 1 and ids[0] != "forged", got
    step("a forged stanza-id is replaced by the server's")

    # A plain body is refused, so never archived.
    phone.make_message(mto=bob_jid, mbody="plain secret", mtype="chat").send()
    await asyncio.wait_for(phone.errors.get(), STEP_TIMEOUT)

    everything = ["msg-1", "msg-2", "msg-3", "msg-4", "msg-5"]
    found, ids, fin = await query(desk, "all", {"with": bob_jid})
    assert found == everything, found
    assert fin.get("complete") == "true", fin
    found, _, _ = await query(bob, "bob", {"with": alice_jid})
    assert found == everything, found
    step("both archives hold the five encrypted messages in order (not the plain one)")

    page1, ids1, fin = await query(desk, "p1", rsm=f"<set xmlns='{RSM}'><max>2</max></set>")
    assert page1 == everything[:2] and fin.get("complete") != "true", (page1, fin)
    last = fin.find(f"{{{RSM}}}set/{{{RSM}}}last").text
    page2, _, _ = await query(desk, "p2", rsm=f"<set xmlns='{RSM}'><max>2</max><after>{last}</after></set>")
    assert page2 == everything[2:4], page2
    tail, _, fin = await query(desk, "tail", rsm=f"<set xmlns='{RSM}'><max>2</max><before/></set>")
    assert tail == everything[3:], tail
    first = fin.find(f"{{{RSM}}}set/{{{RSM}}}first").text
    before, _, _ = await query(desk, "before", rsm=f"<set xmlns='{RSM}'><max>2</max><before>{first}</before></set>")
    assert before == everything[1:3], before
    flipped, _, _ = await query(desk, "flip", rsm=f"<set xmlns='{RSM}'><max>2</max><before/></set>",
                                extra=f"<flip-page/>")
    assert flipped == list(reversed(everything[3:])), flipped
    step("RSM paging: forwards with after, the last page, before an id, flip-page")

    after_id, _, _ = await query(desk, "ext1", {"after-id": ids[2]})
    assert after_id == everything[3:], after_id
    by_ids, _, _ = await query(desk, "ext2", {"ids": [ids[0], ids[4]]})
    assert by_ids == ["msg-1", "msg-5"], by_ids
    future, _, _ = await query(desk, "ext3", {"start": "2999-01-01T00:00:00Z"})
    assert future == [], future
    await expect_error(query(desk, "bad", rsm=f"<set xmlns='{RSM}'><after>nope</after></set>"),
                       "item-not-found")
    step("extended queries (after-id, ids), start in the future, unknown id refused")

    meta = await desk.request(f"<metadata xmlns='{MAM}'/>")
    start = meta.xml.find(f".//{{{MAM}}}start")
    end = meta.xml.find(f".//{{{MAM}}}end")
    assert start.get("id") == ids[0] and end.get("id") == ids[4], meta
    await expect_error(bob.request(f"<query xmlns='{MAM}'/>", itype="set", to=alice_jid), "forbidden")
    step("archive metadata; another user's archive is forbidden")

    await s.stop()


if __name__ == "__main__":
    run(main)
