"""Push Notifications (XEP-0357) as a mobile client uses them: alice
registers an app server (here a slixmpp client standing in for one) with
a secret; a message for her while she is offline, or while her session
waits to be resumed, makes the server notify the app server with a count
only: no content, no sender. After disable, nothing more.

Usage: push.py HOST PORT DOMAIN CA_FILE
"""

import asyncio
import sys

from clients import STEP_TIMEOUT, Scenario, nothing_arrives, run, step

PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"


def enable(app, node, secret):
    return (f"<enable xmlns='{PUSH}' jid='{app}' node='{node}'>"
            f"<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE'><value>{PUBSUB}#publish-options</value></field>"
            f"<field var='secret'><value>{secret}</value></field></x></enable>")


def check_notification(iq, node, secret, forbidden):
    text = str(iq)
    publish = iq.xml.find(f".//{{{PUBSUB}}}publish")
    assert publish is not None and publish.get("node") == node, text
    count = iq.xml.find(f".//{{{PUSH}}}notification//{{jabber:x:data}}field[@var='message-count']")
    assert count is not None, text
    assert secret in text, "the client's publish-options go along"
    for word in forbidden:
        assert word not in text, f"{word!r} leaked into the notification: {text}"


async def main():
    s = Scenario(sys.argv)
    alice_jid, bob_jid, app_jid = await s.register("alice", "bob", "pushapp")
    app = await s.login(app_jid + "/service")
    pushes = app.collect(f"{{jabber:client}}iq/{{{PUBSUB}}}pubsub")
    bob = await s.login(bob_jid + "/desk")

    alice = s.client(alice_jid + "/phone", ["xep_0198"])
    enabled = asyncio.get_running_loop().create_future()
    alice.add_event_handler("sm_enabled", lambda e: enabled.done() or enabled.set_result(e))
    await alice.start()
    await asyncio.wait_for(enabled, STEP_TIMEOUT)
    info = await alice["xep_0030"].get_info(jid=alice_jid)
    assert PUSH in info["disco_info"]["features"], info
    await alice.request(enable(app_jid + "/service", "alice-node", "s3cr3t"), itype="set")
    step("alice registered an app server (the account announces urn:xmpp:push:0)")

    # Her link drops; the session waits to be resumed.
    alice.transport.pause_reading()
    await asyncio.sleep(0.2)
    alice.transport.abort()
    await asyncio.sleep(0.3)
    bob.send_encrypted(alice_jid, "push-marker-1")
    push = await asyncio.wait_for(pushes.get(), STEP_TIMEOUT)
    check_notification(push, "alice-node", "s3cr3t", ["push-marker-1", bob_jid, "OMEMO"])
    step("a message while her session waits to be resumed: the app server is notified, without content or sender")

    # The session is still waiting; end it for good by taking its
    # resource (what it held goes offline), then log out: alice is offline.
    replacement = await s.login(alice_jid + "/phone")
    await replacement.stop()
    await asyncio.sleep(0.5)
    while not pushes.empty():
        pushes.get_nowait()
    bob.send_encrypted(alice_jid, "push-marker-2")
    push = await asyncio.wait_for(pushes.get(), STEP_TIMEOUT)
    check_notification(push, "alice-node", "s3cr3t", ["push-marker-2", bob_jid])
    step("a message while she is offline: notified the same way")

    again = await s.login(alice_jid + "/phone2")
    await again.request(f"<disable xmlns='{PUSH}' jid='{app_jid}/service'/>", itype="set")
    await again.stop()
    await asyncio.sleep(0.5)
    while not pushes.empty():
        pushes.get_nowait()
    bob.send_encrypted(alice_jid, "push-marker-3")
    await nothing_arrives(pushes, "a notification after disable", wait=1.0)
    step("after disable, no more notifications")

    await s.stop()


if __name__ == "__main__":
    run(main)
