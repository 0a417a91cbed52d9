//! Building a planned topology over route netlink.
//!
//! Each veth pair is created in one request, both ends named, numbered, up
//! and already inside their namespaces (`IFLA_NET_NS_FD` on each end), so
//! nothing of a lab ever appears in the namespace the lab runs in. Addresses
//! and routes then go through a netlink socket opened inside each namespace,
//! all namespaces at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::future::{BoxFuture, try_join_all};
use futures::{FutureExt, TryStreamExt};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteScope, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::error::{LabError, Result};
use super::names::RunId;
use super::netns::Namespace;
use super::plan::{BRIDGE_IFNAME, IfacePlan, NodeKind, NodePlan, Plan};

/// Opens a route-netlink socket in the calling thread's network namespace
/// and drives it on `rt`. The socket stays in that namespace for its life,
/// whichever thread uses the returned handle.
pub fn connect(rt: &tokio::runtime::Handle) -> io::Result<Handle> {
    let _guard = rt.enter();
    let (connection, handle, _) = rtnetlink::new_connection()?;
    rt.spawn(connection);
    Ok(handle)
}

/// Creates every bridge, then every veth pair of `plan`, through `root` (a
/// socket in any namespace). `nss[i]` is the namespace of `plan.nodes[i]`.
pub async fn create_links(root: &Handle, plan: &Plan, run: RunId, nss: &[&Namespace]) -> Result<()> {
    let bridges = plan.nodes.iter().enumerate().filter(|(_, n)| n.kind == NodeKind::Switch).map(|(i, node)| {
        let bridge = &node.ifaces[0];
        let msg =
            LinkBridge::new(&run.ifname(BRIDGE_IFNAME)).index(bridge.index).up().setns_by_fd(nss[i].raw_fd()).build();
        let context = format!("creating the bridge of switch '{}'", node.name);
        async move { root.link().add(msg).execute().await.map_err(|e| LabError::netlink(context, e)) }
    });
    try_join_all(bridges).await?;

    let veths = plan.links.iter().map(|link| {
        let (main, peer) = (link.main, link.peer);
        let (mnode, miface) = (&plan.nodes[main.0], &plan.nodes[main.0].ifaces[main.1]);
        let (pnode, piface) = (&plan.nodes[peer.0], &plan.nodes[peer.0].ifaces[peer.1]);
        let peer_name = run.ifname(&piface.local);
        let peer_msg = with_mtu(
            LinkMessageBuilder::<LinkUnspec>::new()
                .name(peer_name.clone())
                .index(piface.index)
                .setns_by_fd(nss[peer.0].raw_fd()),
            piface,
        )
        .build();
        let mut main_msg = with_mtu(
            LinkVeth::new(&run.ifname(&miface.local), &peer_name)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
                .index(miface.index)
                .up()
                .setns_by_fd(nss[main.0].raw_fd()),
            miface,
        );
        if mnode.kind == NodeKind::Switch {
            main_msg = main_msg.controller(mnode.ifaces[0].index);
        }
        let msg = main_msg.build();
        let context = format!("creating veth pair {}:{} — {}:{}", mnode.name, miface.local, pnode.name, piface.local);
        async move { root.link().add(msg).execute().await.map_err(|e| LabError::netlink(context, e)) }
    });
    try_join_all(veths).await?;
    Ok(())
}

/// Moves the interface `name` from the namespace of `from` (a socket
/// there) into the namespace `to` (an open namespace file).
pub async fn move_link(from: &Handle, name: &str, to: std::os::fd::RawFd, context: String) -> Result<()> {
    let msg = LinkUnspec::new_with_name(name).setns_by_fd(to).build();
    from.link().change(msg).execute().await.map_err(|e| LabError::netlink(context, e))
}

/// The families ("IPv4", "IPv6") whose default route leaves through the
/// interface of index `index`, in `routes` (a dump of every routing table).
pub fn default_routes_through(routes: &[RouteMessage], index: u32) -> Vec<&'static str> {
    let mut families = Vec::new();
    for r in routes {
        let h = &r.header;
        let family = match h.address_family {
            AddressFamily::Inet => "IPv4",
            AddressFamily::Inet6 => "IPv6",
            _ => continue,
        };
        if h.destination_prefix_length != 0 || h.kind != RouteType::Unicast {
            continue;
        }
        let through = r.attributes.iter().any(|a| match a {
            RouteAttribute::Oif(i) => *i == index,
            RouteAttribute::MultiPath(hops) => hops.iter().any(|hop| hop.interface_index == index),
            _ => false,
        });
        if through && !families.contains(&family) {
            families.push(family);
        }
    }
    families
}

/// Refuses to adopt `iface` into `switch` when it carries a default route
/// (IPv4 or IPv6, any routing table) of the namespace of `h`: the
/// machine's uplink, which the lab would cut it off. An interface that does
/// not exist is left to the move to report.
pub async fn refuse_uplink(h: &Handle, switch: &str, iface: &str) -> Result<()> {
    let context = |what: &str| format!("switch '{switch}': checking that '{iface}' is not the uplink: {what}");
    let links: Vec<_> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| LabError::netlink(context("listing interfaces"), e))?;
    let Some(index) = links
        .iter()
        .find(|l| l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == iface)))
        .map(|l| l.header.index)
    else {
        return Ok(());
    };
    let mut routes: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| LabError::netlink(context("listing IPv4 routes"), e))?;
    let v6: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| LabError::netlink(context("listing IPv6 routes"), e))?;
    routes.extend(v6);
    let families = default_routes_through(&routes, index);
    if families.is_empty() {
        return Ok(());
    }
    Err(LabError::Input(format!(
        "switch '{switch}': will not adopt interface '{iface}': it carries this machine's {} default route, and \
         taking it into the lab would cut the machine off its network; adopt a spare interface wired to the router",
        families.join(" and ")
    )))
}

fn with_mtu<T>(b: LinkMessageBuilder<T>, iface: &IfacePlan) -> LinkMessageBuilder<T> {
    match iface.mtu {
        Some(mtu) => b.mtu(mtu),
        None => b,
    }
}

/// Brings `lo` and the veth peers up (joining those in a switch to its
/// bridge), adds every address, then every route of one node through `h`, a
/// socket inside the node's namespace.
pub async fn configure_node(h: &Handle, node: &NodePlan) -> Result<()> {
    let place = |what: String| format!("{}: {what}", node.label());
    let lo = h.link().change(LinkUnspec::new_with_index(1).up().build()).execute();
    lo.await.map_err(|e| LabError::netlink(place("bringing lo up".into()), e))?;

    let mut steps: Vec<BoxFuture<'_, Result<()>>> = Vec::new();
    for net in &node.loopback {
        let mut req = h.address().add(1, net.addr(), net.prefix_len());
        if net.addr().is_ipv6() {
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        let context = place(format!("adding address {net} to lo"));
        steps.push(async move { req.execute().await.map_err(|e| LabError::netlink(context, e)) }.boxed());
    }
    if let Some(port) = &node.adopt {
        let msg = LinkUnspec::new_with_name(port).controller(node.ifaces[0].index).up().build();
        let context = place(format!("joining adopted interface '{port}' to the bridge"));
        steps.push(
            async move { h.link().change(msg).execute().await.map_err(|e| LabError::netlink(context, e)) }.boxed(),
        );
    }
    for iface in node.ifaces.iter().filter(|i| i.is_veth_peer) {
        let mut msg = LinkUnspec::new_with_index(iface.index).up();
        if node.kind == NodeKind::Switch {
            msg = msg.controller(node.ifaces[0].index);
        }
        let msg = msg.build();
        let context = place(format!("bringing {} up", iface.local));
        steps.push(
            async move { h.link().change(msg).execute().await.map_err(|e| LabError::netlink(context, e)) }.boxed(),
        );
    }
    for iface in &node.ifaces {
        for net in &iface.addrs {
            let mut req = h.address().add(iface.index, net.addr(), net.prefix_len());
            if net.addr().is_ipv6() {
                // A lab address is unique by construction: no duplicate
                // address detection, usable at once.
                req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            }
            let context = place(format!("adding address {net} to {}", iface.local));
            steps.push(async move { req.execute().await.map_err(|e| LabError::netlink(context, e)) }.boxed());
        }
    }
    try_join_all(steps).await?;

    let routes = node.routes.iter().map(|r| {
        let context =
            place(format!("adding route to {}{}", r.dest, r.gateway.map(|g| format!(" via {g}")).unwrap_or_default()));
        let msg = route_message(r.dest.addr(), r.dest.prefix_len(), r.gateway, r.dev.map(|d| node.ifaces[d].index));
        async move {
            let msg = msg.map_err(|e| LabError::Netlink { context: context.clone(), message: e })?;
            h.route().add(msg).execute().await.map_err(|e| LabError::netlink(context, e))
        }
    });
    try_join_all(routes).await?;
    Ok(())
}

fn route_message(
    dest: IpAddr,
    prefix: u8,
    gateway: Option<IpAddr>,
    dev: Option<u32>,
) -> std::result::Result<rtnetlink::packet_route::route::RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new().destination_prefix(dest, prefix).map_err(|e| format!("{e:?}"))?;
    match gateway {
        Some(g) => b = b.gateway(g).map_err(|e| format!("{e:?}"))?,
        None => b = b.scope(RouteScope::Link),
    }
    if let Some(index) = dev {
        b = b.output_interface(index);
    }
    Ok(b.build())
}
