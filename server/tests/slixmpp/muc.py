"""The MUC service (XEP-0045) as clients that encrypt with OMEMO use it:
members-only, non-anonymous rooms on conference.DOMAIN.

alice creates a room (status 201) and names it; a room cannot be made
open or anonymous; carol, not a member, is refused; alice makes bob a
member; in the room everyone sees real JIDs and can fetch the member
list (what OMEMO needs); encrypted group messages are reflected with the
room's stanza-id, plain ones refused; private messages; a mediated
invitation makes dave a member, who gets the discussion history; the
room's archive; the subject; leaving; a member removed is kicked.

Usage: muc.py HOST PORT DOMAIN CA_FILE
"""

import asyncio
import sys
import xml.etree.ElementTree as ET

from clients import (OMEMO_NS, STANZAS_NS, STEP_TIMEOUT, Scenario, expect_error, nothing_arrives,
                     omemo_payload, run, step)

MUC = "http://jabber.org/protocol/muc"
USER = "http://jabber.org/protocol/muc#user"
ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"
MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"


async def join(client, room, nick, expect_error=None):
    """Joins `room` as `nick`: the self-presence (or the error presence)."""
    answers = client.collect("{jabber:client}presence")
    presence = client.make_presence(pto=f"{room}/{nick}")
    presence.append(ET.fromstring(f"<x xmlns='{MUC}'/>"))
    presence.send()
    while True:
        got = await asyncio.wait_for(answers.get(), STEP_TIMEOUT)
        if got["from"].bare != room:
            continue
        if got["type"] == "error":
            client.remove_handler("{jabber:client}presence")
            assert expect_error is not None, f"join refused: {got}"
            assert got.xml.find(f".//{{{STANZAS_NS}}}{expect_error}") is not None, got
            return got
        codes = [s.get("code") for s in got.xml.findall(f".//{{{USER}}}status")]
        if "110" in codes:
            client.remove_handler("{jabber:client}presence")
            assert expect_error is None, f"joined although {expect_error} was expected"
            return got


def groupchat(client, room, payload, body="I sent you an OMEMO encrypted message."):
    message = client.make_message(mto=room, mbody=body, mtype="groupchat")
    if payload is not None:
        message.append(omemo_payload(payload))
    message.send()


async def next_payload(queue, room):
    while True:
        message = await asyncio.wait_for(queue.get(), STEP_TIMEOUT)
        if message["from"].bare == room and message.xml.find(f".//{{{OMEMO_NS}}}payload") is not None:
            return message


async def main():
    s = Scenario(sys.argv)
    alice_jid, bob_jid, carol_jid, dave_jid = await s.register("alice", "bob", "carol", "dave")
    alice = await s.login(alice_jid + "/desk")
    bob = await s.login(bob_jid + "/desk")
    carol = await s.login(carol_jid + "/desk")
    dave = await s.login(dave_jid + "/desk")
    service = f"conference.{s.domain}"
    room = f"room{s.suffix}@{service}"

    info = await alice["xep_0030"].get_info(jid=service)
    assert MUC in info["disco_info"]["features"], info
    created = await join(alice, room, "alice")
    codes = {st.get("code") for st in created.xml.findall(f".//{{{USER}}}status")}
    assert {"110", "201", "100"} <= codes, created
    form = await alice.request(f"<query xmlns='{OWNER}'/>", to=room)
    assert form.xml.find(".//{jabber:x:data}field[@var='muc#roomconfig_membersonly']") is not None
    submit = ("<x xmlns='jabber:x:data' type='submit'>"
              "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
              "<field var='muc#roomconfig_roomname'><value>Secret plans</value></field></x>")
    await alice.request(f"<query xmlns='{OWNER}'>{submit}</query>", itype="set", to=room)
    open_room = submit.replace("</x>", "<field var='muc#roomconfig_membersonly'><value>0</value></field></x>")
    await expect_error(alice.request(f"<query xmlns='{OWNER}'>{open_room}</query>", itype="set", to=room),
                       "not-acceptable")
    room_info = await bob["xep_0030"].get_info(jid=room)
    features = room_info["disco_info"]["features"]
    assert "muc_membersonly" in features and "muc_nonanonymous" in features, features
    step("alice created and named a room; it stays members-only and non-anonymous")

    await join(carol, room, "carol", expect_error="registration-required")
    await alice.request(f"<query xmlns='{ADMIN}'><item affiliation='member' jid='{bob_jid}'/></query>",
                        itype="set", to=room)
    alice_sees = alice.collect("{jabber:client}presence")
    bob_self = await join(bob, room, "bob")
    assert bob_self.xml.find(f".//{{{USER}}}item").get("jid").startswith(bob_jid)
    while True:
        seen = await asyncio.wait_for(alice_sees.get(), STEP_TIMEOUT)
        if str(seen["from"]) == f"{room}/bob":
            break
    assert seen.xml.find(f".//{{{USER}}}item").get("jid") == f"{bob_jid}/desk", seen
    members = await bob.request(f"<query xmlns='{ADMIN}'><item affiliation='owner'/>"
                                f"<item affiliation='member'/></query>", to=room)
    listed = {i.get("jid") for i in members.xml.findall(f".//{{{ADMIN}}}item")}
    assert listed == {alice_jid, bob_jid}, listed
    step("a non-member is refused; a member joins, sees real JIDs and fetches the member list")

    bob_messages = bob.collect("{jabber:client}message")
    alice_messages = alice.collect("{jabber:client}message")
    groupchat(alice, room, "group-1")
    got = await next_payload(bob_messages, room)
    assert str(got["from"]) == f"{room}/alice" and "group-1" in str(got), got
    assert got.xml.find(f"{{{SID}}}stanza-id").get("by") == room, got
    echo = await next_payload(alice_messages, room)
    assert "group-1" in str(echo)
    groupchat(bob, room, None, body="plain words")
    error = await asyncio.wait_for(bob.errors.get(), STEP_TIMEOUT)
    assert error.xml.find(f".//{{{STANZAS_NS}}}policy-violation") is not None, error
    await nothing_arrives(alice_messages, "a plain group message", wait=0.5)
    step("encrypted group messages reflected with the room's stanza-id; plain ones refused")

    private = bob.make_message(mto=f"{room}/alice", mbody="I sent you an OMEMO encrypted message.", mtype="chat")
    private.append(omemo_payload("private-1"))
    private.send()
    got = await next_payload(alice_messages, room)
    assert str(got["from"]) == f"{room}/bob" and "private-1" in str(got), got
    step("a private message between occupants")

    await bob.request("<ping xmlns='urn:xmpp:ping'/>", to=f"{room}/bob")
    await expect_error(carol.request("<ping xmlns='urn:xmpp:ping'/>", to=f"{room}/bob"), "not-acceptable")
    step("MUC self-ping (XEP-0410): yes for bob, not-acceptable for someone else")

    invitation = dave.collect(f"{{jabber:client}}message/{{{USER}}}x")
    invite = bob.make_message(mto=room)
    invite.append(ET.fromstring(f"<x xmlns='{USER}'><invite to='{dave_jid}'><reason>join us</reason></invite></x>"))
    invite.send()
    got = await asyncio.wait_for(invitation.get(), STEP_TIMEOUT)
    assert got["from"].bare == room and bob_jid in str(got), got
    dave_messages = dave.collect("{jabber:client}message")
    await join(dave, room, "dave")
    history = await next_payload(dave_messages, room)
    assert "group-1" in str(history) and history.xml.find("{urn:xmpp:delay}delay") is not None, history
    step("bob's invitation made dave a member; joining, dave got the history")

    results = bob.collect(f"{{jabber:client}}message/{{{MAM}}}result")
    fin = await bob.request(f"<query xmlns='{MAM}' queryid='r'/>", itype="set", to=room)
    assert fin.xml.find(f"{{{MAM}}}fin").get("complete") == "true", fin
    archived = []
    while not results.empty():
        archived.append(results.get_nowait())
    assert len(archived) == 1 and "group-1" in str(archived[0]), archived
    await expect_error(carol.request(f"<query xmlns='{MAM}'/>", itype="set", to=room), "forbidden")
    step("the room's archive holds the encrypted message, for members only")

    subject = alice.make_message(mto=room, mtype="groupchat")
    subject.append(ET.fromstring("<subject xmlns='jabber:client'>Plans</subject>"))
    subject.send()
    while True:
        got = await asyncio.wait_for(bob_messages.get(), STEP_TIMEOUT)
        if got["subject"] == "Plans":
            break
    bob_leaves = alice.collect("{jabber:client}presence")
    bob.send_presence(pto=f"{room}/bob", ptype="unavailable")
    while True:
        got = await asyncio.wait_for(bob_leaves.get(), STEP_TIMEOUT)
        if str(got["from"]) == f"{room}/bob" and got["type"] == "unavailable":
            break
    dave_kicked = dave.collect("{jabber:client}presence")
    await alice.request(f"<query xmlns='{ADMIN}'><item affiliation='none' jid='{dave_jid}'/></query>",
                        itype="set", to=room)
    while True:
        got = await asyncio.wait_for(dave_kicked.get(), STEP_TIMEOUT)
        if str(got["from"]) == f"{room}/dave" and got["type"] == "unavailable":
            break
    assert "321" in [st.get("code") for st in got.xml.findall(f".//{{{USER}}}status")], got
    step("subject set by the owner; bob left; dave, no longer a member, was removed (321)")

    await s.stop()


if __name__ == "__main__":
    run(main)
