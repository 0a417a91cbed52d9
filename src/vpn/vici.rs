//! A small client of strongSwan's vici protocol (the versatile IKE control
//! interface charon serves on `/run/charon.vici`): enough to list SAs as
//! typed values instead of grepping logs.
//!
//! Wire format: each packet is a 32-bit big-endian length, a type byte, for
//! named packets a length-prefixed name, then a message: a sequence of
//! elements (section start/end, key-value, list start/item/end).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const CMD_REQUEST: u8 = 0;
const CMD_RESPONSE: u8 = 1;
const CMD_UNKNOWN: u8 = 2;
const EVENT_REGISTER: u8 = 3;
const EVENT_UNREGISTER: u8 = 4;
const EVENT_CONFIRM: u8 = 5;
const EVENT_UNKNOWN: u8 = 6;
const EVENT: u8 = 7;

const SECTION_START: u8 = 1;
const SECTION_END: u8 = 2;
const KEY_VALUE: u8 = 3;
const LIST_START: u8 = 4;
const LIST_ITEM: u8 = 5;
const LIST_END: u8 = 6;

/// A vici message: named values, lists and sections, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section(pub BTreeMap<String, Value>);

/// A value of a vici message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string (vici values are bytes; charon sends text).
    Str(String),
    /// A list of strings.
    List(Vec<String>),
    /// A nested section.
    Section(Section),
}

impl Section {
    /// The string value of `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The section under `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.0.get(key)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }

    /// The list under `key`.
    pub fn list(&self, key: &str) -> Option<&[String]> {
        match self.0.get(key)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("vici: {what}"))
}

/// Parses a message body.
pub fn decode(mut b: &[u8]) -> io::Result<Section> {
    fn name(b: &mut &[u8]) -> io::Result<String> {
        let (&len, rest) = b.split_first().ok_or_else(|| bad("truncated name"))?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(bad("truncated name"));
        }
        let n = String::from_utf8_lossy(&rest[..len]).into_owned();
        *b = &rest[len..];
        Ok(n)
    }
    fn value(b: &mut &[u8]) -> io::Result<String> {
        if b.len() < 2 {
            return Err(bad("truncated value"));
        }
        let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
        if b.len() < 2 + len {
            return Err(bad("truncated value"));
        }
        let v = String::from_utf8_lossy(&b[2..2 + len]).into_owned();
        *b = &b[2 + len..];
        Ok(v)
    }
    let mut stack: Vec<(String, Section)> = vec![(String::new(), Section::default())];
    let mut list: Option<(String, Vec<String>)> = None;
    while let Some((&kind, rest)) = b.split_first() {
        b = rest;
        match kind {
            SECTION_START => {
                let n = name(&mut b)?;
                stack.push((n, Section::default()));
            }
            SECTION_END => {
                if stack.len() < 2 {
                    return Err(bad("section end without start"));
                }
                let (n, s) = stack.pop().ok_or_else(|| bad("empty stack"))?;
                if let Some(top) = stack.last_mut() {
                    top.1.0.insert(n, Value::Section(s));
                }
            }
            KEY_VALUE => {
                let n = name(&mut b)?;
                let v = value(&mut b)?;
                if let Some(top) = stack.last_mut() {
                    top.1.0.insert(n, Value::Str(v));
                }
            }
            LIST_START => list = Some((name(&mut b)?, Vec::new())),
            LIST_ITEM => {
                let v = value(&mut b)?;
                list.as_mut().ok_or_else(|| bad("list item outside a list"))?.1.push(v);
            }
            LIST_END => {
                let (n, items) = list.take().ok_or_else(|| bad("list end without start"))?;
                if let Some(top) = stack.last_mut() {
                    top.1.0.insert(n, Value::List(items));
                }
            }
            other => return Err(bad(&format!("unknown element type {other}"))),
        }
    }
    if stack.len() != 1 || list.is_some() {
        return Err(bad("unterminated section or list"));
    }
    Ok(stack.pop().map(|(_, s)| s).unwrap_or_default())
}

fn packet(kind: u8, name: &str, body: &[u8]) -> Vec<u8> {
    let mut p = vec![kind, name.len() as u8];
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(body);
    let mut out = (p.len() as u32).to_be_bytes().to_vec();
    out.extend(p);
    out
}

/// A connection to charon's vici socket.
pub struct Vici {
    stream: UnixStream,
}

impl Vici {
    /// Connects to the socket at `path` (a host's `run/charon.vici`).
    pub fn connect(path: &Path) -> io::Result<Vici> {
        let stream = UnixStream::connect(path)
            .map_err(|e| io::Error::new(e.kind(), format!("vici socket {}: {e}", path.display())))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Vici { stream })
    }

    fn send(&mut self, p: &[u8]) -> io::Result<()> {
        self.stream.write_all(p)
    }

    fn recv(&mut self) -> io::Result<(u8, String, Section)> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > 1 << 20 {
            return Err(bad("packet length out of range"));
        }
        let mut p = vec![0u8; len];
        self.stream.read_exact(&mut p)?;
        let kind = p[0];
        let (name, body) = match kind {
            EVENT => {
                let n = usize::from(*p.get(1).ok_or_else(|| bad("truncated event"))?);
                let name = String::from_utf8_lossy(p.get(2..2 + n).ok_or_else(|| bad("truncated event"))?).into_owned();
                (name, &p[2 + n..])
            }
            _ => (String::new(), &p[1..]),
        };
        Ok((kind, name, decode(body)?))
    }

    /// Runs a command that answers with one response (`stats`, `version`).
    pub fn request(&mut self, command: &str) -> io::Result<Section> {
        self.send(&packet(CMD_REQUEST, command, &[]))?;
        match self.recv()? {
            (CMD_RESPONSE, _, msg) => Ok(msg),
            (CMD_UNKNOWN, _, _) => Err(bad(&format!("charon has no command {command}"))),
            (other, _, _) => Err(bad(&format!("unexpected packet {other}"))),
        }
    }

    /// Runs a command that streams `event`s before its response; returns
    /// the events' messages and the response.
    pub fn streamed(&mut self, command: &str, event: &str) -> io::Result<(Vec<Section>, Section)> {
        self.send(&packet(EVENT_REGISTER, event, &[]))?;
        match self.recv()?.0 {
            EVENT_CONFIRM => {}
            EVENT_UNKNOWN => return Err(bad(&format!("charon has no event {event}"))),
            other => return Err(bad(&format!("unexpected packet {other} registering {event}"))),
        }
        self.send(&packet(CMD_REQUEST, command, &[]))?;
        let mut events = Vec::new();
        let response = loop {
            let (kind, name, msg) = self.recv()?;
            match kind {
                EVENT if name == event => events.push(msg),
                EVENT => {}
                CMD_RESPONSE => break msg,
                CMD_UNKNOWN => return Err(bad(&format!("charon has no command {command}"))),
                other => return Err(bad(&format!("unexpected packet {other}"))),
            }
        };
        self.send(&packet(EVENT_UNREGISTER, event, &[]))?;
        let _ = self.recv();
        Ok((events, response))
    }
}

/// A CHILD_SA as vici lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    /// Configuration name.
    pub name: String,
    /// `INSTALLED`, `REKEYING`…
    pub state: String,
    /// Inbound SPI (hex).
    pub spi_in: String,
    /// Outbound SPI (hex).
    pub spi_out: String,
    /// Whether ESP is encapsulated in UDP (NAT-T).
    pub encap: bool,
}

/// An IKE_SA as vici lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSa {
    /// Configuration name.
    pub name: String,
    /// `ESTABLISHED`, `CONNECTING`…
    pub state: String,
    /// IKE version (1 or 2).
    pub version: String,
    /// Remote address.
    pub remote_host: String,
    /// Remote port (500 or 4500).
    pub remote_port: String,
    /// Whether a NAT was detected on either side.
    pub nat_any: bool,
    /// Virtual IPs this side got.
    pub local_vips: Vec<String>,
    /// CHILD_SAs.
    pub children: Vec<ChildSa>,
}

/// Reads `list-sas` event messages.
pub fn ike_sas(events: &[Section]) -> Vec<IkeSa> {
    let mut out = Vec::new();
    for ev in events {
        for (name, v) in &ev.0 {
            let Value::Section(sa) = v else { continue };
            let s = |k: &str| sa.str(k).unwrap_or_default().to_string();
            let children = sa
                .section("child-sas")
                .map(|c| {
                    c.0.values()
                        .filter_map(|v| match v {
                            Value::Section(ch) => Some(ChildSa {
                                name: ch.str("name").unwrap_or_default().to_string(),
                                state: ch.str("state").unwrap_or_default().to_string(),
                                spi_in: ch.str("spi-in").unwrap_or_default().to_string(),
                                spi_out: ch.str("spi-out").unwrap_or_default().to_string(),
                                encap: ch.str("encap") == Some("yes"),
                            }),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(IkeSa {
                name: name.clone(),
                state: s("state"),
                version: s("version"),
                remote_host: s("remote-host"),
                remote_port: s("remote-port"),
                nat_any: sa.str("nat-any") == Some("yes"),
                local_vips: sa.list("local-vips").map(|l| l.to_vec()).unwrap_or_default(),
                children,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(out: &mut Vec<u8>, k: &str, v: &str) {
        out.push(KEY_VALUE);
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }

    fn start(out: &mut Vec<u8>, k: &str) {
        out.push(SECTION_START);
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
    }

    #[test]
    fn a_list_sa_event_decodes_into_typed_sas() {
        let mut m = Vec::new();
        start(&mut m, "home");
        kv(&mut m, "state", "ESTABLISHED");
        kv(&mut m, "version", "2");
        kv(&mut m, "remote-host", "198.51.100.2");
        kv(&mut m, "remote-port", "4500");
        kv(&mut m, "nat-any", "yes");
        m.push(LIST_START);
        m.push(10);
        m.extend_from_slice(b"local-vips");
        m.push(LIST_ITEM);
        m.extend_from_slice(&9u16.to_be_bytes());
        m.extend_from_slice(b"10.99.0.1");
        m.push(LIST_END);
        start(&mut m, "child-sas");
        start(&mut m, "net-1");
        kv(&mut m, "name", "net");
        kv(&mut m, "state", "INSTALLED");
        kv(&mut m, "spi-in", "c1a2b3c4");
        kv(&mut m, "encap", "yes");
        m.push(SECTION_END);
        m.push(SECTION_END);
        m.push(SECTION_END);
        let section = decode(&m).expect("valid message");
        let sas = ike_sas(&[section]);
        assert_eq!(sas.len(), 1);
        let sa = &sas[0];
        assert_eq!((sa.name.as_str(), sa.state.as_str(), sa.remote_port.as_str()), ("home", "ESTABLISHED", "4500"));
        assert!(sa.nat_any);
        assert_eq!(sa.local_vips, vec!["10.99.0.1".to_string()]);
        assert_eq!(sa.children[0].state, "INSTALLED");
        assert!(sa.children[0].encap);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for m in [&[SECTION_END][..], &[KEY_VALUE, 5, b'a'], &[LIST_ITEM, 0, 1, b'x'], &[9], &[SECTION_START, 1, b'x']]
        {
            assert!(decode(m).is_err(), "{m:?}");
        }
        assert_eq!(decode(&[]).expect("empty is fine"), Section::default());
    }

    #[test]
    fn packets_carry_their_length_and_name() {
        let p = packet(CMD_REQUEST, "list-sas", &[]);
        assert_eq!(&p[..4], &10u32.to_be_bytes());
        assert_eq!(p[4], CMD_REQUEST);
        assert_eq!(&p[6..], b"list-sas");
    }
}
