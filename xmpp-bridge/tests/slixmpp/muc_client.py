"""A standard XMPP client (slixmpp) in a bridge-backed MUC room: the room
is a Tern group of `tern` users; the client joins, sees the members as
occupants, talks to them, hears them, and sees a removed member leave;
then it creates a room and invites one of them; when a member logs in on
a new device, the bridge asks the client to verify it, and 'verify' does.

Usage: muc_client.py HOST PORT JID PASSWORD CERT ROOM MARKER BOB CAROL
Exits 0 when every step passed; prints one line per step.
"""

import asyncio
import logging
import sys

from recorder import TIMEOUT, RecordingClient, step

HOST, PORT, JID, PASSWORD, CERT, ROOM, MARKER, BOB, CAROL = sys.argv[1:10]
MUC_USER = "http://jabber.org/protocol/muc#user"


async def main():
    alice = RecordingClient(JID, PASSWORD, CERT, plugins=("xep_0030", "xep_0045"))
    await alice.start(HOST, PORT)
    await alice.wait_for("the invitation", lambda s: s.name == "message" and s.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite") is not None and s["from"].bare == ROOM)
    step("invited to the group's room")

    await alice["xep_0045"].join_muc_wait(ROOM, "alice", maxstanzas=0, timeout=TIMEOUT)
    occupants = set(alice["xep_0045"].get_roster(ROOM))
    assert {BOB, CAROL, "alice"} <= occupants, occupants
    step(f"joined; occupants {sorted(occupants)}")

    alice.send_message(mto=ROOM, mbody=f"hi all {MARKER}", mtype="groupchat")
    await alice.wait_for("the room's echo", lambda s: s.name == "message" and s["type"] == "groupchat" and s["body"] == f"hi all {MARKER}")
    step("our groupchat message came back from the room")

    heard = await alice.wait_for("bob in the room", lambda s: s.name == "message" and s["type"] == "groupchat" and s["from"].resource == BOB)
    assert heard["body"] == "hello room", str(heard)
    step("bob's group message arrived from his occupant")

    await alice.wait_for("carol leaving", lambda s: s.name == "presence" and s["type"] == "unavailable" and s["from"].resource == CAROL)
    step("carol, removed from the group, left the room")

    # A room of our own: joining it creates a group; inviting adds bob.
    new_room = f"made-here@{ROOM.split('@')[1]}"
    await alice["xep_0045"].join_muc_wait(new_room, "alice", maxstanzas=0, timeout=TIMEOUT)
    created = await alice.wait_for("the created room", lambda s: s.name == "presence" and s["from"].bare == new_room and s.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status[@code='201']") is not None)
    step("joining a new room created its group")
    alice["xep_0045"].invite(new_room, BOB, reason="join us")
    await alice.wait_for("bob in the new room", lambda s: s.name == "presence" and s["from"].bare == new_room and s["from"].resource == BOB)
    alice.send_message(mto=new_room, mbody=f"made here {MARKER}", mtype="groupchat")
    await alice.wait_for("the new room's echo", lambda s: s.name == "message" and s["from"].bare == new_room and s["body"] == f"made here {MARKER}")
    step("invited bob, who became an occupant, and talked to him there")

    # bob logs in on a second device: the bridge asks whether to trust it.
    domain = JID.split("@")[1]
    prompt = await alice.wait_for("the verification prompt", lambda s: s.name == "message" and s["from"].full == domain and "reply 'verify'" in s["body"])
    assert f"{BOB} has a new device" in prompt["body"], prompt["body"]
    alice.send_message(mto=domain, mbody="verify", mtype="chat")
    done = await alice.wait_for("the confirmation", lambda s: s.name == "message" and s["from"].full == domain and s["body"].startswith("verified: "))
    assert BOB in done["body"], done["body"]
    step("the bridge announced bob's new device with its fingerprint; 'verify' trusted it")

    alice.disconnect()
    await alice.disconnected


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(asyncio.wait_for(main(), 170))
    print("all steps passed")
