//! DNSSEC validation of forwarded answers (`[dns] validate = true`), with hickory-resolver's
//! validator: the chain from a trust anchor (the root KSKs built into hickory, 20326 and
//! 38696, plus the operator's `trust_anchors`) down to the answer is fetched through the same
//! forwarders, and every signature and NSEC/NSEC3 proof checked. The forwarder sets AD only
//! when this says [`Validated::secure`]; bogus answers become SERVFAIL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData};
use hickory_proto::dnssec::{Algorithm, Proof, PublicKeyBuf, TrustAnchors, Verifier};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};

/// Resolver groups kept at most (one per distinct upstream list; the config has few).
const MAX_RESOLVERS: usize = 64;

/// A validated (or proven insecure) upstream answer.
#[derive(Debug)]
pub struct Validated {
    pub message: Message,
    /// Every answer record (or, for a negative answer, the denial proof) chains to an anchor.
    pub secure: bool,
}

/// The validating client: one hickory resolver per upstream list.
///
/// hickory trusts a DNSKEY set below the root only when every key in it is an anchor (else it
/// asks the parent for DS, which a closed network cannot answer). So for each operator anchor
/// (a zone's KSK, an "island of trust") the zone's DNSKEY set is fetched, its signature by
/// that KSK checked here, and every key of the set joins the anchors. This is redone hourly
/// (a new ZSK is published a day before it signs) and after a bogus answer, at most once a
/// minute.
pub struct Validator {
    islands: Vec<(Name, DNSKEY, u16)>,
    resolvers: Mutex<HashMap<Vec<SocketAddr>, (TokioResolver, Instant)>>,
    cache_entries: u64,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Validator").field("islands", &self.islands.len()).finish()
    }
}

impl Validator {
    /// The validator for `[dns] trust_anchors` (DNSKEY lines); errors are
    /// `FILE:LINE:COL: dns.trust_anchors[N]: message` lines.
    pub fn new(anchors: &[lienthong_config::InlineRecord], cache_entries: usize) -> Result<Validator, Vec<String>> {
        let mut islands = Vec::new();
        let mut errors = Vec::new();
        for (index, anchor) in anchors.iter().enumerate() {
            match parse_anchor(&anchor.text) {
                Ok((name, key)) => {
                    let tag = key.calculate_key_tag().unwrap_or(0);
                    islands.push((name.to_lowercase(), key, tag));
                }
                Err(message) => errors.push(format!(
                    "{}: dns.trust_anchors[{index}]: {message} (expected `NAME TTL IN DNSKEY 257 3 ALGORITHM KEY`)",
                    anchor.location
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Validator { islands, resolvers: Mutex::new(HashMap::new()), cache_entries: cache_entries as u64 })
    }

    /// Resolves `name`/`qtype` through `upstreams`, validating. `None` when the answer is bogus
    /// or no upstream answered (the caller answers SERVFAIL).
    pub async fn lookup(&self, upstreams: &[SocketAddr], name: &Name, qtype: RecordType) -> Option<Validated> {
        let resolver = self.resolver_for(upstreams, false).await?;
        match self.lookup_with(&resolver, name, qtype).await {
            Some(validated) => Some(validated),
            None if self.islands.iter().any(|(island, _, _)| island.zone_of(name)) => {
                // Perhaps the island's keys rolled since they were fetched.
                let fresh = self.resolver_for(upstreams, true).await?;
                self.lookup_with(&fresh, name, qtype).await
            }
            None => None,
        }
    }

    async fn lookup_with(&self, resolver: &TokioResolver, name: &Name, qtype: RecordType) -> Option<Validated> {
        let keep = |record: &Record| record.record_type() == qtype || !super::is_signer_type(record.record_type());
        match resolver.lookup(name.clone(), qtype).await {
            Ok(lookup) => {
                let answers: Vec<Record> = lookup.answers().iter().filter(|record| keep(record)).cloned().collect();
                let secure = !answers.is_empty() && answers.iter().all(|record| record.proof == Proof::Secure);
                Some(Validated { message: response(ResponseCode::NoError, answers, Vec::new()), secure })
            }
            Err(NetError::Dns(DnsError::Nsec { response: nsec, proof, .. })) => {
                if proof == Proof::Bogus {
                    return None;
                }
                let authorities = nsec.authorities.iter().filter(|record| keep(record)).cloned().collect();
                let code = nsec.metadata.response_code;
                Some(Validated { message: response(code, Vec::new(), authorities), secure: proof == Proof::Secure })
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => {
                // hickory has checked the denial (a failed one comes back as bogus); the
                // answer is secure when its SOA and NSEC/NSEC3 records all chain to an anchor.
                let proofs: Vec<Record> = none.authorities.as_deref().unwrap_or_default().to_vec();
                let denial =
                    proofs.iter().any(|record| matches!(record.record_type(), RecordType::NSEC | RecordType::NSEC3));
                let has_soa = proofs.iter().any(|record| record.record_type() == RecordType::SOA);
                let secure = denial && has_soa && proofs.iter().all(|record| record.proof == Proof::Secure);
                let mut authorities: Vec<Record> = proofs.into_iter().filter(|record| keep(record)).collect();
                if !has_soa && let Some(soa) = none.soa {
                    authorities.push(soa.into_record_of_rdata());
                }
                Some(Validated { message: response(none.response_code, Vec::new(), authorities), secure })
            }
            Err(error) => {
                tracing::debug!(%name, %error, "validated lookup failed");
                None
            }
        }
    }

    /// The resolver for `upstreams`, (re)built when missing, older than an hour, or when
    /// `refresh` asks and the last build is over a minute old.
    async fn resolver_for(&self, upstreams: &[SocketAddr], refresh: bool) -> Option<TokioResolver> {
        let now = Instant::now();
        if let Some((resolver, built)) = self.resolvers.lock().ok()?.get(upstreams) {
            let age = now.saturating_duration_since(*built);
            if age < ISLAND_REFRESH && !(refresh && age >= ISLAND_RETRY) {
                return Some(resolver.clone());
            }
        }
        let mut anchors = TrustAnchors::default();
        for (island, ksk, tag) in &self.islands {
            anchors.insert_with_name(ksk.public_key(), LowerName::from(island));
            for key in island_keys(upstreams, island, ksk, *tag).await {
                anchors.insert_with_name(key.public_key(), LowerName::from(island));
            }
        }
        let servers = upstreams
            .iter()
            .map(|upstream| {
                let mut server = NameServerConfig::udp_and_tcp(upstream.ip());
                for connection in &mut server.connections {
                    connection.port = upstream.port();
                }
                server
            })
            .collect();
        let mut options = ResolverOpts::default();
        options.validate = true;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        options.cache_size = self.cache_entries.max(64);
        options.preserve_intermediates = true;
        options.edns0 = true;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .with_trust_anchor(Arc::new(anchors))
        .build()
        .ok()?;
        let mut resolvers = self.resolvers.lock().ok()?;
        if resolvers.len() >= MAX_RESOLVERS {
            resolvers.clear();
        }
        resolvers.insert(upstreams.to_vec(), (resolver.clone(), now));
        Some(resolver)
    }
}

/// How often an island's DNSKEY set is fetched again.
const ISLAND_REFRESH: Duration = Duration::from_secs(3600);
/// Least time between two fetches prompted by bogus answers.
const ISLAND_RETRY: Duration = Duration::from_secs(60);

/// The DNSKEY set of `island`, asked of the first upstream that answers (TCP, DO and CD
/// set), when one of its RRSIGs, valid now, is made by the anchored KSK; else nothing.
async fn island_keys(upstreams: &[SocketAddr], island: &Name, ksk: &DNSKEY, tag: u16) -> Vec<DNSKEY> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    for upstream in upstreams {
        let Some(message) = ask_dnskey(*upstream, island).await else { continue };
        let keys: Vec<&Record> = message
            .answers
            .iter()
            .filter(|record| record.record_type() == RecordType::DNSKEY && record.name == *island)
            .collect();
        let signed = message.answers.iter().any(|record| {
            let RData::DNSSEC(DNSSECRData::RRSIG(signature)) = &record.data else { return false };
            let input = signature.input();
            input.type_covered == RecordType::DNSKEY
                && input.key_tag == tag
                && input.signer_name == *island
                && u64::from(input.sig_inception.get()) <= now
                && now <= u64::from(input.sig_expiration.get())
                && ksk.verify_rrsig(island, DNSClass::IN, signature, keys.iter().copied()).is_ok()
        });
        if !signed {
            tracing::warn!(zone = %island, %upstream, "the DNSKEY set is not signed by the configured trust anchor");
            continue;
        }
        return keys
            .into_iter()
            .filter_map(|record| match &record.data {
                RData::DNSSEC(DNSSECRData::DNSKEY(key)) if key.zone_key() => Some(key.clone()),
                _ => None,
            })
            .collect();
    }
    Vec::new()
}

/// One DNSKEY query over TCP with DO and CD (the signatures are checked by the caller).
async fn ask_dnskey(upstream: SocketAddr, island: &Name) -> Option<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let id: u16 = rand::random();
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.metadata.checking_disabled = true;
    query.add_query(hickory_proto::op::Query::query(island.clone(), RecordType::DNSKEY));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(crate::wire::MAX_UDP_PAYLOAD);
    edns.enable_dnssec();
    query.set_edns(edns);
    let bytes = query.to_vec().ok()?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
        stream.write_all(&u16::try_from(bytes.len()).ok()?.to_be_bytes()).await.ok()?;
        stream.write_all(&bytes).await.ok()?;
        let length = stream.read_u16().await.ok()?;
        let mut buffer = vec![0u8; usize::from(length)];
        stream.read_exact(&mut buffer).await.ok()?;
        let response = Message::from_vec(&buffer).ok()?;
        (response.metadata.id == id).then_some(response)
    };
    tokio::time::timeout(Duration::from_secs(3), exchange).await.ok()?
}

/// One `NAME [TTL] [CLASS] DNSKEY FLAGS PROTOCOL ALGORITHM KEY` line.
fn parse_anchor(text: &str) -> Result<(Name, DNSKEY), String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let at = tokens
        .iter()
        .position(|token| token.eq_ignore_ascii_case("DNSKEY"))
        .ok_or_else(|| "not a DNSKEY record".to_owned())?;
    let owner = tokens.first().filter(|_| at > 0).ok_or_else(|| "the owner name is missing".to_owned())?;
    if !owner.ends_with('.') {
        return Err(format!("`{owner}` is not fully qualified (end it with a dot)"));
    }
    let name = Name::from_ascii(owner).map_err(|error| format!("`{owner}`: {error}"))?;
    let [flags, protocol, algorithm, key @ ..] = &tokens[at + 1..] else {
        return Err("the DNSKEY needs flags, protocol, algorithm and key".to_owned());
    };
    let flags: u16 = flags.parse().map_err(|_| format!("`{flags}` is not a flags number"))?;
    if *protocol != "3" {
        return Err(format!("protocol `{protocol}` is not 3"));
    }
    let algorithm: u8 = algorithm.parse().map_err(|_| format!("`{algorithm}` is not an algorithm number"))?;
    let key = data_encoding::BASE64
        .decode(key.concat().as_bytes())
        .map_err(|error| format!("the key is not base64: {error}"))?;
    let dnskey = DNSKEY::with_flags(flags, PublicKeyBuf::new(key, Algorithm::from_u8(algorithm)));
    if !dnskey.zone_key() {
        return Err("not a zone key (flags 256 or 257)".to_owned());
    }
    Ok((name, dnskey))
}

fn response(code: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>) -> Message {
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.metadata.response_code = code;
    message.add_answers(answers);
    message.add_authorities(authorities);
    message
}
