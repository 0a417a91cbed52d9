//! Why a tunnel did not come up, in one line: the line of a daemon's log
//! (or of an error) that explains it, for the report's check table.

/// Log lines that explain a failure, by what they contain (lower case),
/// most telling first: a refusal names its reason, a timeout only says
/// that nothing came back.
const EXPLAINS: &[&str] = &[
    // strongSwan
    "no_proposal_chosen",
    "no acceptable proposal",
    "authentication_failed",
    "ts_unacceptable",
    "unsupported",
    "failed to load",
    "no ike config found",
    "no matching peer config",
    "giving up after",
    "peer not responding",
    // xl2tpd
    "did not specify",
    "maximum retries exceeded",
    // pptp, pptpd
    "connection refused",
    "no route to host",
    "peer closed",
    // OpenVPN
    "tls error",
    "verify error",
    "tls key negotiation failed",
    "cannot resolve host address",
    // WireGuard (wireguard-go)
    "handshake did not complete",
    "invalid handshake initiation",
    // PPP
    "authentication failed",
    "never acknowledged",
    "link down:",
    "timed out",
];

/// The line of `text` that best explains a failure, trimmed to 200
/// characters; `None` when no line is known to explain one.
pub fn explain(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    EXPLAINS.iter().find_map(|needle| {
        lines.iter().find(|l| l.to_lowercase().contains(needle)).map(|l| l.chars().take(200).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_outranks_a_timeout() {
        let log = "10:00:01 09[IKE] retransmit 1 of request\n\
                   10:00:02 09[IKE] received NO_PROPOSAL_CHOSEN notify error\n\
                   timed out waiting for install CHILD_SA net";
        assert_eq!(explain(log).as_deref(), Some("10:00:02 09[IKE] received NO_PROPOSAL_CHOSEN notify error"));
    }

    #[test]
    fn nothing_known_is_none() {
        assert_eq!(explain("all is well\n"), None);
    }
}
