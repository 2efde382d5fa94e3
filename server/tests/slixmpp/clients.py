"""What the slixmpp scenarios share: a standard client that records what
it receives, an OMEMO-style encrypted payload, and bounded waits."""

import asyncio
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError

OMEMO_NS = "eu.siacs.conversations.axolotl"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
STEP_TIMEOUT = 15


def step(text):
    print(f"ok - {text}", flush=True)


def omemo_payload(ciphertext):
    """An OMEMO (0.3) <encrypted/> element around `ciphertext`."""
    return ET.fromstring(
        f"<encrypted xmlns='{OMEMO_NS}'><header sid='1'><key rid='2'>AAAA</key>"
        f"<iv>AAAAAAAAAAAAAAAA</iv></header><payload>{ciphertext}</payload></encrypted>"
    )


class Client(slixmpp.ClientXMPP):
    """A client of the server at host:port (certificates checked against
    ca_file) that records what it receives in queues."""

    def __init__(self, jid, password, host, port, ca_file, register=False):
        super().__init__(jid, password)
        self.address = (host, int(port))
        self.ca_certs = ca_file
        for plugin in ("xep_0030", "xep_0004", "xep_0060", "xep_0077", "xep_0199"):
            self.register_plugin(plugin)
        self.registered = asyncio.get_running_loop().create_future()
        self.online = asyncio.get_running_loop().create_future()
        self.messages = asyncio.Queue()
        self.errors = asyncio.Queue()
        if register:
            self["xep_0077"].force_registration = True
            self.add_event_handler("register", self.on_register)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message_error)

    async def on_register(self, _form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send()
            self.registered.set_result(True)
        except IqError as e:
            self.registered.set_exception(RuntimeError(f"registration refused: {e.iq['error']['condition']}"))

    async def on_start(self, _event):
        await self.get_roster()
        self.send_presence()
        self.online.set_result(True)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.messages.put_nowait(msg)

    def on_message_error(self, msg):
        self.errors.put_nowait(msg)

    def open(self):
        """Connects (the login goes on in the background)."""
        host, port = self.address
        self.connect(host=host, port=port)

    async def start(self):
        """Connects and waits until the session is up."""
        self.open()
        await asyncio.wait_for(self.online, STEP_TIMEOUT)

    def send_encrypted(self, to, ciphertext):
        """A chat message with an OMEMO-style payload and the usual
        fallback body."""
        msg = self.make_message(mto=to, mbody="I sent you an OMEMO encrypted message.", mtype="chat")
        msg.append(omemo_payload(ciphertext))
        msg.send()

    async def stop(self):
        self.disconnect()
        await self.disconnected


async def wait_for(predicate, what, timeout=STEP_TIMEOUT):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}")
