//! Elements as XML text, for storage (the archive, offline messages, the
//! s2s queue): the same document `String::from(&element)` gives, written
//! directly instead of through rxml's event encoder, which allocates per
//! item and tracks prefixes that stored stanzas never need. Parsing the
//! text gives back an equal element.

use std::borrow::Cow;

use minidom::rxml::Namespace;
use minidom::{Element, Node};

/// `element` as a standalone XML document (no declaration): its
/// namespace is declared on it as the default namespace.
pub fn to_text(element: &Element) -> String {
    let mut text = String::with_capacity(512);
    append_text(&mut text, element);
    text
}

/// Appends `element` to `text`, as [`to_text`] writes it.
pub fn append_text(text: &mut String, element: &Element) {
    write_element(text, element, None, None);
}

/// `element` as [`to_text`] writes it, with its elements in namespace
/// `from` written in `to` instead (a stanza's `jabber:client` for
/// `jabber:server`, as `xml::to_server` renames them).
pub fn to_text_renamed(element: &Element, from: &str, to: &str) -> String {
    let mut text = String::with_capacity(512);
    write_element(&mut text, element, None, Some((from, to)));
    text
}

/// Appends `raw` escaped for a single-quoted attribute value (for text
/// written around elements, such as a stream header).
pub fn append_attribute_value(text: &mut String, raw: &str) {
    escape_into(text, raw, Quoted::Yes);
}

/// Appends `element` to `text`; `parent` is the default namespace in
/// scope (`None` at the root), `rename` a namespace to write as another.
fn write_element(
    text: &mut String,
    element: &Element,
    parent: Option<&str>,
    rename: Option<(&str, &str)>,
) {
    // minidom lends no namespace, only copies: compared in place, it is
    // copied only where an element declares a namespace of its own.
    let ns: Cow<str> = match (rename, parent) {
        (Some((from, to)), _) if element.has_ns(from) => Cow::Borrowed(to),
        (_, Some(parent)) if element.has_ns(parent) => Cow::Borrowed(parent),
        _ => Cow::Owned(element.ns()),
    };
    text.push('<');
    text.push_str(element.name());
    if parent != Some(&*ns) {
        text.push_str(" xmlns='");
        escape_into(text, &ns, Quoted::Yes);
        text.push('\'');
    }
    write_attributes(text, element);
    let mut children = element.nodes().peekable();
    if children.peek().is_none() {
        text.push_str("/>");
        return;
    }
    text.push('>');
    for child in children {
        match child {
            Node::Element(child) => write_element(text, child, Some(&ns), rename),
            Node::Text(content) => escape_into(text, content, Quoted::No),
        }
    }
    text.push_str("</");
    text.push_str(element.name());
    text.push('>');
}

/// Appends the attributes; those in a namespace other than `xml` get a
/// prefix declared on the element itself.
fn write_attributes(text: &mut String, element: &Element) {
    let mut declared = 0;
    for ((ns, name), value) in element.attrs().iter() {
        text.push(' ');
        if ns.is_none() {
            // Unqualified: the common case.
        } else if *ns == Namespace::XML {
            text.push_str("xml:");
        } else {
            let prefix = format!("tns{declared}");
            declared += 1;
            text.push_str("xmlns:");
            text.push_str(&prefix);
            text.push_str("='");
            escape_into(text, ns, Quoted::Yes);
            text.push_str("' ");
            text.push_str(&prefix);
            text.push(':');
        }
        text.push_str(name);
        text.push_str("='");
        escape_into(text, value, Quoted::Yes);
        text.push('\'');
    }
}

/// Whether text goes into a single-quoted attribute value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoted {
    Yes,
    No,
}

/// Appends `raw` with markup characters as references. Carriage returns
/// always, and tabs and newlines in attribute values, are references too,
/// so that a parser's normalisation gives back the same characters.
fn escape_into(text: &mut String, raw: &str, quoted: Quoted) {
    let special = |b: u8| match b {
        b'&' | b'<' | b'>' | b'\r' => true,
        b'\'' | b'\n' | b'\t' => quoted == Quoted::Yes,
        _ => false,
    };
    let mut start = 0;
    for (at, byte) in raw.bytes().enumerate() {
        if !special(byte) {
            continue;
        }
        text.push_str(&raw[start..at]);
        text.push_str(match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#xd;",
            b'\'' => "&apos;",
            b'\n' => "&#xa;",
            _ => "&#x9;",
        });
        start = at + 1;
    }
    text.push_str(&raw[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(xml: &str) {
        let element: Element = xml.parse().expect("test XML");
        let text = to_text(&element);
        let parsed: Element = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, element, "{text}");
        assert_eq!(to_text(&parsed), text);
    }

    #[test]
    fn a_message_comes_back_equal() {
        round_trip(
            "<message xmlns='jabber:client' from='a@x/r' to='b@y' type='chat' id='m1'>\
             <encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'>\
             <key rid='2'>AAA=</key><iv>BBB=</iv></header><payload>CCC=</payload></encrypted>\
             <store xmlns='urn:xmpp:hints'/><stanza-id xmlns='urn:xmpp:sid:0' by='b@y' id='x'/>\
             </message>",
        );
    }

    #[test]
    fn markup_in_text_and_attributes_is_escaped() {
        round_trip(
            "<a xmlns='urn:t' q=\"it's &amp; &lt;x&gt; &quot;q&quot;\" t='a&#9;b&#10;c&#13;'>\
             1 &lt; 2 &amp;&amp; 3 &gt; 2 ]]&gt; it's \"quoted\"&#13;\nend</a>",
        );
    }

    #[test]
    fn namespaces_change_and_return() {
        round_trip(
            "<iq xmlns='jabber:client' type='result'><query xmlns='urn:a'>\
             <item><x xmlns='urn:b'><y/></x></item><empty xmlns=''/></query><z/></iq>",
        );
    }

    #[test]
    fn namespaced_attributes_keep_their_namespace() {
        round_trip(
            "<message xmlns='jabber:client' xml:lang='en' xmlns:p='urn:p' xmlns:q='urn:q' \
             p:one='1' q:two='2'><body xml:lang='fr'>salut</body></message>",
        );
    }

    #[test]
    fn a_namespace_is_renamed_throughout() {
        let stanza: Element = "<message xmlns='jabber:client' to='a@b'><body>x</body>\
             <forwarded xmlns='urn:xmpp:forward:0'><message><body>y</body></message></forwarded>\
             </message>"
            .parse()
            .expect("test XML");
        let text = to_text_renamed(&stanza, "jabber:client", "jabber:server");
        let renamed = crate::xml::to_server(stanza);
        assert_eq!(text.parse::<Element>().expect("ours"), renamed);
        assert!(text.starts_with("<message xmlns='jabber:server'"), "{text}");
    }

    #[test]
    fn the_same_document_as_minidom_writes() {
        let element: Element =
            "<presence xmlns='jabber:client' to='a@b'><show>away</show><c xmlns='urn:c' v='1'/></presence>"
                .parse()
                .expect("test XML");
        let ours: Element = to_text(&element).parse().expect("ours");
        let minidoms: Element = String::from(&element).parse().expect("minidom's");
        assert_eq!(ours, minidoms);
    }
}
