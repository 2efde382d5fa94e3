"""Stream Management (XEP-0198) and Client State Indication (XEP-0352)
as a mobile client uses them.

1. alice enables resumable stream management; her client stops reading
   (a phone whose link died: the server's writes go nowhere), bob sends
   three messages, the link drops, bob sends two more; alice reconnects
   and resumes: all five arrive, once each, in order.
2. carol's link drops the same way and she never resumes: after the
   server's resumption timeout the messages she did not acknowledge are
   in offline storage, and her next login gets them all.
3. dave says he is inactive: alice's presence changes and chat states
   wait (only the latest), an encrypted message brings them, in order.

Usage: resumption_csi.py HOST PORT DOMAIN CA_FILE  (the server's
limits.resumption_timeout_secs must be 3)
"""

import asyncio
import sys
import xml.etree.ElementTree as ET

from clients import STEP_TIMEOUT, Scenario, nothing_arrives, omemo_payload, run, step, wait_for

RESUMPTION_TIMEOUT = 3


def payloads(messages):
    return [m.xml.find(".//{eu.siacs.conversations.axolotl}payload").text for m in messages]


async def receive(client, count):
    return [await asyncio.wait_for(client.messages.get(), STEP_TIMEOUT) for _ in range(count)]


async def lose_link(client):
    """The client stops reading, then its connection drops without a
    closing handshake."""
    client.transport.pause_reading()
    await asyncio.sleep(0.3)
    return client


def drop(client):
    client.transport.abort()


async def main():
    s = Scenario(sys.argv)
    alice_jid, bob_jid, carol_jid, dave_jid = await s.register("alice", "bob", "carol", "dave")
    bob = await s.login(bob_jid + "/desk")

    alice = s.client(alice_jid + "/phone", ["xep_0198"])
    enabled = asyncio.get_running_loop().create_future()
    alice.add_event_handler("sm_enabled", lambda e: enabled.done() or enabled.set_result(e))
    await alice.start()
    sm = await asyncio.wait_for(enabled, STEP_TIMEOUT)
    assert sm["resume"] in (True, "true"), sm
    step("alice enabled resumable stream management")

    await lose_link(alice)
    for i in range(3):
        bob.send_encrypted(alice_jid + "/phone", f"resume-{i}")
    await asyncio.sleep(0.5)
    drop(alice)
    await alice.disconnected
    for i in range(3, 5):
        bob.send_encrypted(alice_jid, f"resume-{i}")
    await asyncio.sleep(0.3)
    resumed = asyncio.get_running_loop().create_future()
    alice.add_event_handler("session_resumed", lambda e: resumed.done() or resumed.set_result(e))
    alice.connect(host=s.host, port=s.port)
    await asyncio.wait_for(resumed, STEP_TIMEOUT)
    got = payloads(await receive(alice, 5))
    assert got == [f"resume-{i}" for i in range(5)], got
    await nothing_arrives(alice.messages, "a duplicate")
    step("after a dropped link alice resumed: the 5 messages arrived once each, in order")

    carol = s.client(carol_jid + "/phone", ["xep_0198"])
    carol_enabled = asyncio.get_running_loop().create_future()
    carol.add_event_handler("sm_enabled", lambda e: carol_enabled.done() or carol_enabled.set_result(e))
    await carol.start()
    await asyncio.wait_for(carol_enabled, STEP_TIMEOUT)
    await lose_link(carol)
    for i in range(3):
        bob.send_encrypted(carol_jid + "/phone", f"offline-{i}")
    await asyncio.sleep(0.5)
    drop(carol)
    await asyncio.sleep(RESUMPTION_TIMEOUT + 1.5)
    carol_again = await s.login(carol_jid + "/tablet")
    got = payloads(await receive(carol_again, 3))
    assert got == [f"offline-{i}" for i in range(3)], got
    step("carol never resumed: what she had not acknowledged went offline and reached her next login")

    dave = await s.login(dave_jid + "/phone", ["xep_0352"])
    alice.send_presence_subscription(pto=dave_jid)
    await wait_for(lambda: dave.client_roster[alice_jid]["subscription"] == "both", "subscription")
    presences = dave.collect("{jabber:client}presence")
    states = dave.collect("{jabber:client}message/{http://jabber.org/protocol/chatstates}composing")
    await asyncio.sleep(0.3)
    while not presences.empty():
        presences.get_nowait()
    dave["xep_0352"].send_inactive()
    await asyncio.sleep(0.3)
    for show in ("away", "xa", "dnd"):
        alice.send_presence(pshow=show)
    typing = alice.make_message(mto=dave_jid, mtype="chat")
    typing.append(ET.fromstring("<composing xmlns='http://jabber.org/protocol/chatstates'/>"))
    typing.send()
    await nothing_arrives(presences, "presence while inactive", wait=1.0)
    await nothing_arrives(states, "a chat state while inactive", wait=0.1)
    alice.send_encrypted(dave_jid, "wake-up")
    got = await asyncio.wait_for(dave.messages.get(), STEP_TIMEOUT)
    assert "wake-up" in str(got)
    presence = await asyncio.wait_for(presences.get(), STEP_TIMEOUT)
    assert presence["show"] == "dnd", presence
    await nothing_arrives(presences, "an outdated presence", wait=0.3)
    await asyncio.wait_for(states.get(), STEP_TIMEOUT)
    step("inactive: presence and chat states waited (latest only) until a message came")
    dave["xep_0352"].send_active()
    alice.send_presence(pshow="chat")
    presence = await asyncio.wait_for(presences.get(), STEP_TIMEOUT)
    assert presence["show"] == "chat", presence
    step("active again: presence arrives at once")

    await s.stop()


if __name__ == "__main__":
    run(main)
