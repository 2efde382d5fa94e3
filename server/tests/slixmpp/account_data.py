"""What clients keep on their account and learn about others: vCards
(XEP-0054) and avatars (XEP-0084, XEP-0153), private XML (XEP-0049),
bookmarks (XEP-0402), blocking (XEP-0191), entity capabilities of the
server (XEP-0115), Last Activity (XEP-0012) and Entity Time (XEP-0202).

Usage: account_data.py HOST PORT DOMAIN CA_FILE
"""

import asyncio
import base64
import hashlib
import sys
import xml.etree.ElementTree as ET

from clients import (STEP_TIMEOUT, Scenario, expect_error, nothing_arrives, run, step,
                     wait_for)

VCARD = "vcard-temp"
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_META = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
BLOCKING = "urn:xmpp:blocking"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def publish_options(fields):
    values = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in fields.items())
    return (f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>"
            f"{values}</x></publish-options>")


async def publish(client, node, item_id, payload, options=None):
    extra = publish_options(options) if options else ""
    await client.request(f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item_id}'>"
                         f"{payload}</item></publish>{extra}</pubsub>", itype="set")


async def items(client, owner, node):
    result = await client.request(f"<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>", to=owner)
    return result.xml.findall(f".//{{{PUBSUB}}}item")


async def main():
    s = Scenario(sys.argv)
    alice_jid, bob_jid, carol_jid = await s.register("alice", "bob", "carol")
    alice = await s.login(alice_jid + "/desk")
    alice2 = await s.login(alice_jid + "/phone")
    bob = await s.login(bob_jid + "/desk")
    carol = s.client(carol_jid + "/desk", ["xep_0115"])
    server_caps = asyncio.get_running_loop().create_future()
    carol.add_event_handler(
        "entity_caps",
        lambda p: p["from"] == s.domain and not server_caps.done() and server_caps.set_result(p["caps"]))
    await carol.start()
    alice.send_presence_subscription(pto=bob_jid)
    await wait_for(lambda: bob.client_roster[alice_jid]["subscription"] == "both", "subscription")

    # vCard-temp, with the avatar as PHOTO.
    photo = base64.b64encode(PNG).decode()
    await alice.request(f"<vCard xmlns='{VCARD}'><FN>Alice Liddell</FN><PHOTO><TYPE>image/png</TYPE>"
                        f"<BINVAL>{photo}</BINVAL></PHOTO></vCard>", itype="set")
    card = await bob.request(f"<vCard xmlns='{VCARD}'/>", to=alice_jid)
    assert card.xml.find(f".//{{{VCARD}}}FN").text == "Alice Liddell", card
    assert card.xml.find(f".//{{{VCARD}}}BINVAL").text == photo
    empty = await bob.request(f"<vCard xmlns='{VCARD}'/>", to=carol_jid)
    assert empty.xml.find(f"{{{VCARD}}}vCard") is not None and len(list(empty.xml.find(f"{{{VCARD}}}vCard"))) == 0
    await expect_error(bob.request(f"<vCard xmlns='{VCARD}'><FN>Mallory</FN></vCard>", itype="set",
                                   to=alice_jid), "forbidden")
    step("vCard set by its owner, read by others (an empty one when unset), not set by others")

    # XEP-0153: the photo hash travels in presence.
    sha = hashlib.sha1(PNG).hexdigest()
    presences = bob.collect("{jabber:client}presence/{vcard-temp:x:update}x")
    update = alice.make_presence()
    update.append(ET.fromstring(f"<x xmlns='vcard-temp:x:update'><photo>{sha}</photo></x>"))
    update.send()
    got = await asyncio.wait_for(presences.get(), STEP_TIMEOUT)
    assert sha in str(got), got
    step("the vCard avatar hash reaches the contact in presence (XEP-0153)")

    # XEP-0084: data and metadata nodes; the contact is notified.
    events = bob.collect(f"{{jabber:client}}message/{{{EVENT}}}event")
    await publish(alice, AVATAR_DATA, sha, f"<data xmlns='{AVATAR_DATA}'>{photo}</data>")
    await publish(alice, AVATAR_META, sha,
                  f"<metadata xmlns='{AVATAR_META}'><info id='{sha}' bytes='{len(PNG)}' "
                  f"type='image/png' height='1' width='1'/></metadata>")
    while True:
        event = await asyncio.wait_for(events.get(), STEP_TIMEOUT)
        if event.xml.find(f".//{{{EVENT}}}items").get("node") == AVATAR_META:
            break
    data = await items(bob, alice_jid, AVATAR_DATA)
    assert base64.b64decode(data[0].find(f"{{{AVATAR_DATA}}}data").text) == PNG
    step("an avatar published with XEP-0084: the contact is notified of the metadata and fetches the data")

    # Private XML storage.
    stored = f"<storage xmlns='storage:bookmarks'><conference jid='room@conference.{s.domain}' autojoin='true' name='Room'/></storage>"
    await alice.request(f"<query xmlns='jabber:iq:private'>{stored}</query>", itype="set")
    back = await alice2.request("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>")
    assert back.xml.find(".//{storage:bookmarks}conference").get("name") == "Room", back
    other = await alice2.request("<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:none'/></query>")
    assert other.xml.find(".//{urn:example:none}prefs") is not None
    await expect_error(bob.request("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>",
                                   to=alice_jid), "forbidden")
    step("private XML stored and read back by the owner's other client, refused to others")

    # Bookmarks 2: a whitelist PEP node, notified to the owner's clients only.
    alice_events = alice2.collect(f"{{jabber:client}}message/{{{EVENT}}}event")
    room = f"room@conference.{s.domain}"
    await publish(alice, BOOKMARKS, room,
                  f"<conference xmlns='{BOOKMARKS}' name='The room' autojoin='true'><nick>alice</nick></conference>",
                  {"persist_items": "true", "max_items": "max", "send_last_published_item": "never",
                   "access_model": "whitelist"})
    event = await asyncio.wait_for(alice_events.get(), STEP_TIMEOUT)
    while event.xml.find(f".//{{{EVENT}}}items").get("node") != BOOKMARKS:
        event = await asyncio.wait_for(alice_events.get(), STEP_TIMEOUT)
    assert room in str(event), event
    saved = await items(alice2, alice_jid, BOOKMARKS)
    assert saved[0].get("id") == room, saved
    await expect_error(items(bob, alice_jid, BOOKMARKS), "forbidden")
    step("a bookmark (XEP-0402) reaches the owner's other client; contacts cannot read it")

    # Blocking.
    pushes = alice2.collect(f"{{jabber:client}}iq/{{{BLOCKING}}}block")
    gone = bob.collect("{jabber:client}presence")
    await alice.request(f"<block xmlns='{BLOCKING}'><item jid='{bob_jid}'/></block>", itype="set")
    listed = await alice2.request(f"<blocklist xmlns='{BLOCKING}'/>")
    assert [i.get("jid") for i in listed.xml.findall(f".//{{{BLOCKING}}}item")] == [bob_jid], listed
    push = await asyncio.wait_for(pushes.get(), STEP_TIMEOUT)
    assert bob_jid in str(push)
    unavailable = await asyncio.wait_for(gone.get(), STEP_TIMEOUT)
    while unavailable["type"] != "unavailable":
        unavailable = await asyncio.wait_for(gone.get(), STEP_TIMEOUT)
    assert unavailable["from"].bare == alice_jid, unavailable
    bob.send_encrypted(alice_jid, "blocked-1")
    error = await asyncio.wait_for(bob.errors.get(), STEP_TIMEOUT)
    assert error["error"]["condition"] == "service-unavailable", error
    await nothing_arrives(alice.messages, "a message from a blocked contact")
    alice.send_encrypted(bob_jid, "blocked-2")
    error = await asyncio.wait_for(alice.errors.get(), STEP_TIMEOUT)
    assert error.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None, error
    await nothing_arrives(bob.messages, "a message to a blocked contact")
    await alice.request(f"<unblock xmlns='{BLOCKING}'/>", itype="set")
    bob.send_encrypted(alice_jid, "unblocked")
    got = await asyncio.wait_for(alice.messages.get(), STEP_TIMEOUT)
    assert "unblocked" in str(got)
    step("blocking: both directions refused (service-unavailable / <blocked/>), pushed to the other client; unblock restores")

    # Entity capabilities of the server, Entity Time, Last Activity.
    info = await alice["xep_0030"].get_info(jid=s.domain)
    assert "urn:xmpp:carbons:2" in info["disco_info"]["features"], info
    assert "urn:xmpp:blocking" in info["disco_info"]["features"]
    caps = await asyncio.wait_for(server_caps, STEP_TIMEOUT)
    computed = carol["xep_0115"].generate_verstring(info["disco_info"], "sha-1")
    assert caps["hash"] == "sha-1" and caps["ver"] == computed, (caps, computed)
    by_node = await carol["xep_0030"].get_info(jid=s.domain, node=f"{caps['node']}#{caps['ver']}")
    assert set(by_node["disco_info"]["features"]) == set(info["disco_info"]["features"])
    time = await alice.request("<time xmlns='urn:xmpp:time'/>", to=s.domain)
    assert time.xml.find(".//{urn:xmpp:time}utc").text.endswith("Z"), time
    uptime = await alice.request("<query xmlns='jabber:iq:last'/>", to=s.domain)
    assert int(uptime.xml.find("{jabber:iq:last}query").get("seconds")) >= 0
    online = await bob.request("<query xmlns='jabber:iq:last'/>", to=alice_jid)
    assert online.xml.find("{jabber:iq:last}query").get("seconds") == "0", online
    await alice.stop()
    await alice2.stop()
    await asyncio.sleep(0.5)
    offline = await bob.request("<query xmlns='jabber:iq:last'/>", to=alice_jid)
    assert int(offline.xml.find("{jabber:iq:last}query").get("seconds")) >= 0, offline
    await expect_error(carol.request("<query xmlns='jabber:iq:last'/>", to=alice_jid), "forbidden")
    step("server caps in stream features match its disco#info (XEP-0115); entity time, uptime; last activity to a contact (online 0, then since logout), refused to a stranger")

    await s.stop()


if __name__ == "__main__":
    run(main)
