"""What the slixmpp scenarios share: a standard client that records what
it receives, an OMEMO-style encrypted payload, and bounded waits."""

import asyncio
import secrets
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

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

    def collect(self, xpath):
        """A queue of the stanzas matching `xpath` (e.g.
        "{jabber:client}message/{urn:xmpp:mam:2}result") from now on."""
        queue = asyncio.Queue()
        self.register_handler(Callback(xpath, MatchXPath(xpath), queue.put_nowait))
        return queue

    async def request(self, payload, itype="get", to=None):
        """Sends an IQ with the XML `payload` (a string) and returns the
        result; an error raises IqError."""
        iq = self.Iq()
        iq["type"] = itype
        if to is not None:
            iq["to"] = to
        iq.append(ET.fromstring(payload))
        return await iq.send(timeout=STEP_TIMEOUT)

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


async def expect_error(coroutine, condition):
    """Awaits `coroutine`, which must fail with an IQ error `condition`."""
    try:
        result = await coroutine
    except IqError as e:
        got = e.iq["error"]["condition"]
        found = e.iq.xml.find(f".//{{{STANZAS_NS}}}{condition}")
        assert got == condition or found is not None, f"expected {condition}, got {e.iq}"
        return e.iq
    raise AssertionError(f"expected {condition}, got a result: {result}")


async def nothing_arrives(queue, what, wait=0.5):
    """Asserts that `queue` stays empty for `wait` seconds."""
    try:
        got = await asyncio.wait_for(queue.get(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"{what} arrived: {got}")


def text_of(stanza, path):
    """The text of the first element at `path` (ElementTree syntax) in a
    slixmpp stanza, or None."""
    element = stanza.xml.find(path)
    return None if element is None else element.text


class Scenario:
    """What every feature scenario gets from its command line
    (HOST PORT DOMAIN CA_FILE): fresh account names and logged-in
    clients."""

    def __init__(self, argv):
        self.host, self.port, self.domain, self.ca_file = argv[1], int(argv[2]), argv[3], argv[4]
        self.suffix = secrets.token_hex(3)
        self.password = "secret-" + self.suffix
        self.clients = []

    def jid(self, name):
        return f"{name}{self.suffix}@{self.domain}"

    def client(self, jid, plugins=(), cls=None, **kwargs):
        client = (cls or Client)(jid, self.password, self.host, self.port, self.ca_file, **kwargs)
        for plugin in plugins:
            client.register_plugin(plugin)
        self.clients.append(client)
        return client

    async def register(self, *names):
        """Creates accounts in-band; their bare JIDs."""
        jids = [self.jid(name) for name in names]
        for jid in jids:
            client = Client(jid, self.password, self.host, self.port, self.ca_file, register=True)
            client.open()
            await asyncio.wait_for(client.registered, STEP_TIMEOUT)
            await asyncio.wait_for(client.online, STEP_TIMEOUT)
            await client.stop()
        return jids

    async def login(self, jid, plugins=(), **kwargs):
        client = self.client(jid, plugins, **kwargs)
        await client.start()
        return client

    async def stop(self):
        for client in self.clients:
            if client.is_connected():
                await client.stop()


def run(main):
    """Runs a scenario's `main()` and prints the line the test looks for."""
    import logging
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(asyncio.wait_for(main(), 120))
    print("all steps passed")
