"""Every timer and bound of AxiomNet, named once (the spirit of wireguard-go's device/constants.go).

Each bound says what happens when it is hit. Times are in seconds (floats), counts are plain ints.
"""

from __future__ import annotations

# --- protocol identity --------------------------------------------------------------------------
# 4-bit version in the switch header; anything else is MalformedPacket. 2: u16 path lengths and hop limit, u32
# watermark in the routed header, depth bounded by the datagram (routing v2, docs/PROTOCOL.md "Version"). 3: hop
# certificates over their issue seq, ROOT_BEAT. 4: announcements travel in ANNOUNCE_PARTs (§5.7), any depth.
PROTOCOL_VERSION = 4
NOISE_PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"
# Bound into every handshake: a peer speaking another protocol or version fails at message 2.
NOISE_PROLOGUE = b"AxiomNet/%d " % PROTOCOL_VERSION + NOISE_PROTOCOL_NAME

# --- wire format --------------------------------------------------------------------------------
HEADER_SIZE = 16  # route label u32 | version:4 type:4 | receiver index u24 | counter u64
AEAD_TAG_SIZE = 16
MAX_DATAGRAM_SIZE = 65507  # largest UDP payload over IPv4; longer input is MalformedPacket
MAX_RECEIVER_INDEX = (1 << 24) - 1  # receiver index is 24 bits; 0 means "no receiver yet" (first handshake message)
MAX_CONTROL_MESSAGE_SIZE = 4096  # bytes of msgpack in one control message; larger is MalformedPacket
MAX_CONTROL_ARRAY_LEN = 256  # longest list a control message may hold
MAX_CONTROL_STR_LEN = 256  # longest string a control message may hold
MAX_CONTROL_BIN_LEN = 1024  # longest bytes field a control message may hold
MAX_CONTROL_MAP_LEN = 32  # most keys in one control map

# --- transport (WireGuard's constants as the starting point) -------------------------------------
REKEY_AFTER_MESSAGES = 1 << 60  # the initiator starts a new handshake after sending this many
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1  # a keypair never sends or accepts a counter past this
REKEY_AFTER_TIME = 120.0  # the initiator of a keypair rekeys once it is this old
REJECT_AFTER_TIME = 180.0  # a keypair older than this neither sends nor receives
REKEY_ATTEMPT_TIME = 90.0  # a handshake that has not completed after this long is given up (HandshakeFailed)
REKEY_TIMEOUT = 5.0  # cap of the handshake retransmission backoff
REKEY_TIMEOUT_JITTER = 0.333  # at most this much random delay is added to each retransmission
HANDSHAKE_INITIAL_RETRANSMIT = 0.25  # first retransmission; doubles up to REKEY_TIMEOUT (fast first dial)
KEEPALIVE_TIMEOUT = 10.0  # received but sent nothing for this long: send an empty keepalive
# Sent authenticated traffic but heard nothing back for this long: the peer lost our keys; rehandshake.
NEW_HANDSHAKE_AFTER_SILENCE = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
PREVIOUS_KEYPAIR_GRACE = 10.0  # after a rekey the old keypair still decrypts for this long
SESSION_EXPIRY = REJECT_AFTER_TIME * 3  # no usable keys and nothing heard for this long: session expired
SIMULTANEOUS_OPEN_WINDOW = REKEY_TIMEOUT  # two handshakes completing within this are one simultaneous open
REPLAY_WINDOW_SIZE = 8192  # counters tracked behind the highest seen; older ones are rejected as replays
MAX_STAGED_PACKETS = 128  # packets queued while a handshake is under way; the oldest is dropped past this
MAX_PREVIOUS_KEYPAIRS = 2  # previous (and, apart, pending) receive-only keypairs kept; past it one is dropped

# --- handshake denial-of-service bounds ------------------------------------------------------------
MAX_PENDING_HANDSHAKES = 1024  # responder half-open handshakes; the oldest is evicted past this
PENDING_HANDSHAKE_TIMEOUT = REKEY_TIMEOUT * 2  # a half-open responder handshake is dropped after this
COOKIE_LOAD_THRESHOLD = 64  # with this many half-open handshakes the responder demands cookies
COOKIE_SECRET_LIFETIME = 120.0  # the cookie secret rotates this often; the previous one stays valid
COOKIE_SIZE = 16
HANDSHAKE_RATE_PER_SOURCE = 20.0  # initiations per second accepted from one source IP (token bucket)
HANDSHAKE_BURST_PER_SOURCE = 40.0  # bucket depth; past it initiations are dropped (RateLimited)
MAX_RATE_LIMITED_SOURCES = 4096  # source buckets kept; the least recently used is forgotten past this
# Every HANDSHAKE_INIT is padded to this many bytes (docs/PROTOCOL.md §2.2.1), and a responder answers an INIT
# only with a HANDSHAKE_RESP no larger than it: a spoofed INIT can never draw more bytes than it cost (WireGuard's
# first message is larger than its answer for the same reason). Room for a handshake payload of up to
# HANDSHAKE_INIT_SIZE - 132 = 124 bytes in the RESP.
HANDSHAKE_INIT_SIZE = 256
# Refused handshakes count as load: a source (IPv4 address, IPv6 /64) whose completed handshakes were refused
# (admission, allowed_keys, a key that does not own the address) more than REFUSALS_BEFORE_LOAD times, one refusal
# forgiven every 1 / REFUSALS_FORGIVEN_PER_SECOND s, must answer a cookie and then meets the per-source rate
# limit on every INIT, as all sources do under load: a refusal no longer costs us a Diffie-Hellman per attempt.
REFUSALS_BEFORE_LOAD = 8.0
REFUSALS_FORGIVEN_PER_SECOND = 0.1
# ... and, as long as it is, its INITs that carry a valid cookie are also held to this rate (a bucket of its own,
# on top of HANDSHAKE_RATE_PER_SOURCE): a source all of whose handshakes are refused gets few Diffie-Hellmans.
REFUSED_SOURCE_HANDSHAKE_RATE = 1.0
REFUSED_SOURCE_HANDSHAKE_BURST = 2.0
# A retransmitted INIT (the same message 1 and index) gets the stored RESP again at most this often: a captured
# INIT replayed in a burst draws one answer, an initiator's retransmissions (>= 0.25 s apart) each get theirs.
RESP_RESEND_INTERVAL = 0.2

# --- node / actors -------------------------------------------------------------------------------
DEFAULT_UDP_PORT = 7443
DEFAULT_TUN_NAME = "axn0"
DEFAULT_MTU = 1400
MAX_SESSIONS = 1024  # live SessionActors; a new peer past this is refused (logged, counted)
HEARTBEAT_INTERVAL = 1.0  # one tick of the tree: the root signs a ROOT_BEAT, sent down the tree (docs/ROUTING.md)
# Every link session sends an authenticated KEEPALIVE when it sent nothing else for this long (a NAT keeps its
# mapping open: most forget an idle UDP mapping after 30 s or more; WireGuard's persistent keepalive is 25 s),
# so a neighbour that is there is heard at least this often whatever the tree does.
LINK_KEEPALIVE = 10.0
# Nothing authenticated from a peer for this long (two keepalives and a margin): routes withdrawn.
PEER_DEAD_AFTER = 2.5 * LINK_KEEPALIVE
DIAL_BACKOFF_INITIAL = 0.2  # first re-dial of a lost static peer; doubles with jitter
DIAL_BACKOFF_MAX = 5.0  # cap of the re-dial backoff
READER_BATCH_MAX = 64  # datagrams/packets a reader drains into one batch
MAX_QUEUED_BATCHES = 256  # batches queued at one data-path actor; past this new batches are dropped, counted
MAX_QUEUED_URGENT = 1024  # control-lane messages queued at one actor; past this new ones are dropped, counted
SESSION_WORKERS = 4  # threads running every session actor's mailbox (actors/base.py ActorPool)
HOSTED_SLICE = 16  # messages a pool worker handles for one actor before it serves the next ready one
DEAD_PROBE_INTERVAL = 10.0  # a neighbour marked dead gets one authenticated keepalive per this, not announcements
ACTOR_STOP_TIMEOUT = 2.0  # each actor gets this long to stop on shutdown
SHUTDOWN_DEADLINE = 5.0  # the whole daemon is gone within this after SIGTERM
RESTART_BACKOFF_INITIAL = 0.1  # supervisor: first restart delay of a crashed actor; doubles
RESTART_BACKOFF_MAX = 5.0
RESTART_INTENSITY = 5  # more than this many restarts ...
RESTART_WINDOW = 30.0  # ... within this many seconds: the daemon stops and exits non-zero
ADMIN_REQUEST_MAX = 4096  # bytes of one admin request line
ADMIN_TIMEOUT = 2.0  # admin socket read/ask timeout

# --- routing: spanning tree and announcements (axiomnet/tree.py) --------------------------------------
# One tick of the tree is one HEARTBEAT_INTERVAL (H). Repair times in docs/ROUTING.md are counted in H.
# The plaintext one link datagram carries: the datagram bound less the 16-byte switch header and the 16-byte tag.
MAX_LINK_PLAINTEXT = MAX_DATAGRAM_SIZE - HEADER_SIZE - AEAD_TAG_SIZE  # 65475
ANNOUNCEMENT_FIXED_SIZE = 182  # header, root signature and certificate of an announcement (§5.2)
ANNOUNCEMENT_HOP_SIZE = 106  # one signed hop of its chain: child key, port, issue seq, parent signature
MAX_BLOOM_ENCODED = 2 + 1024  # the largest bloom filter encoding (§6.4)
ROUTED_HEADER_SIZE = 48  # the routed header before its two paths (docs/PROTOCOL.md §6.1, routed.FIXED_SIZE)
MIN_ROUTED_PAYLOAD = 1280  # what a routed packet between the two deepest positions must still carry (IPv6's MTU)
# Hops from the root: 16,036, what the routed header can carry. Protocol 3 sent an announcement in one CONTROL
# datagram, which bounded the depth at 606 (a full bloom filter and 606 hops of 106 bytes); protocol 4 sends it in
# parts (ANNOUNCE_PART, docs/PROTOCOL.md §5.7), so what is left is the routed packet: two u16 paths this deep and
# a 1,280-byte payload in one link datagram. Every length on the wire is u16 (announcement hop count, routed path
# lengths, hop limit); a deeper position is refused. Routes are at most 2 x this many hops, under HOP_LIMIT.
MAX_TREE_DEPTH = (MAX_LINK_PLAINTEXT - ROUTED_HEADER_SIZE - MIN_ROUTED_PAYLOAD) // 4
# The largest announcement (§5.2): a full chain and a full bloom filter. Larger is MalformedPacket.
MAX_ANNOUNCEMENT_SIZE = ANNOUNCEMENT_FIXED_SIZE + ANNOUNCEMENT_HOP_SIZE * MAX_TREE_DEPTH + MAX_BLOOM_ENCODED
# An announcement travels as ANNOUNCE_PARTs (§5.7) of this many of its bytes (the last one fewer): with the part's
# 14-byte header and the link's 32 bytes a part is a 1,246-byte datagram, under UNDERLAY_DATAGRAM_TARGET, so an
# announcement is never IP-fragmented however deep its chain.
ANNOUNCE_PART_BYTES = 1200
MAX_ANNOUNCE_PARTS = -(-MAX_ANNOUNCEMENT_SIZE // ANNOUNCE_PART_BYTES)  # a part count above this is MalformedPacket
# A receiver holds at most one partial announcement per neighbour (a newer number replaces it); one not complete
# this long after its first part arrived is dropped (counted partials_expired) ...
PART_TIMEOUT = 2.0 * HEARTBEAT_INTERVAL
# ... and all partial announcements together hold at most this many bytes: past it the oldest is dropped (counted
# partials_evicted). Honest parts complete within a link delay; a neighbour that never completes holds one at most.
MAX_PARTIAL_BYTES = 16 * 1024 * 1024
MAX_PORT = 0xFFFF  # ports are u16, 1..MAX_PORT; 0 is padding and "no port"
PORT_REUSE_DELAY = 60.0  # a port freed by a departed neighbour is not given to another one for this long
# Our parent sent no ROOT_BEAT for this long: it is no parent candidate until it announces again (its branch or
# the link is gone; if the root itself is, ROOT_TIMEOUT follows). The simulator's failure detection uses it too.
NEIGHBOUR_TIMEOUT = 2.0 * HEARTBEAT_INTERVAL
ROOT_TIMEOUT = 3.0 * HEARTBEAT_INTERVAL  # a root whose seq has not advanced for this long: dead up to that seq
# Hop certificates (docs/PROTOCOL.md §5.2) are signed over the root seq at which they were issued and hold while
# the receiver's newest seq of that root is at most CERT_LIFETIME past it; a parent issues them again after
# CERT_REFRESH seqs (and at once on any change), so an announcement is needed only on change and every
# CERT_REFRESH heartbeats. The replay window: a node its parent dropped can show its old place for CERT_LIFETIME.
CERT_LIFETIME = 60
CERT_REFRESH = 30
PARENT_SWITCH_RATIO = 0.5  # a valid parent is kept unless another candidate costs less than this times it
MIN_ANNOUNCE_INTERVAL = HEARTBEAT_INTERVAL / 4  # announcements (or beats) arriving faster from one neighbour are dropped
MAX_DEAD_ROOTS = 64  # roots remembered as dead (key -> last seq); the oldest is forgotten past this
MAX_VERIFIED_SIGNATURES = 2048  # signatures remembered as verified (siblings share ancestors); LRU past this
# Heartbeats a remembered signature may go unused before it is forgotten: a live certificate comes again in every
# announcement that carries it (at least every 1.5 x CERT_REFRESH), and a root seq's signature is dead a beat later.
VERIFIED_IDLE_TICKS = CERT_LIFETIME
RTT_EWMA_WEIGHT = 0.25  # weight of a new RTT sample in a link's smoothed RTT (parent cost = depth x RTT)
DEFAULT_LINK_RTT = 0.001  # assumed RTT (s) of a link until it is measured
# A neighbour gets an RTT probe (docs/PROTOCOL.md §5.5) at its first tick, then once per this: a parent's cost
# needs no per-second freshness, and every probe is two datagrams on the link (at idle, the probe and its reply
# stand in for that many keepalives).
PROBE_INTERVAL = 2.0 * LINK_KEEPALIVE
# While a link is quiet and healthy its probes stretch: each answered probe whose sample agrees with the smoothed RTT
# (within RTT_STABLE_RATIO of it, or RTT_STABLE_ABS: a difference below that moves no parent choice) and each probe
# that went unanswered (a peer that does not answer probes, or lost one: liveness is the keepalives' job) doubles the
# interval, up to PROBE_INTERVAL_MAX; a sample that disagrees brings it back to PROBE_INTERVAL. A stable idle link
# is probed once per 80 s instead of 20, and a hub of 10,000 bare sessions stops probing each every 20 s.
PROBE_INTERVAL_MAX = 4.0 * PROBE_INTERVAL
RTT_STABLE_RATIO = 0.25
RTT_STABLE_ABS = 0.002
MIN_LINK_RTT = 0.0001  # RTT samples are clamped up to this, so that a cost is never 0

# --- routing: lookup (axiomnet/bloom.py, axiomnet/lookup.py) and the routed header -------------------
BLOOM_BITS = 8192  # bits of one lookup bloom filter (1 KiB), as ironwood
BLOOM_HASHES = 8  # bits set per address
LOOKUP_CACHE_TTL = 60.0  # a looked-up destination's coordinates are used for this long, then looked up again
MAX_LOOKUP_CACHE = 4096  # destinations cached; the least recently used is forgotten past this
# Caches whose entries hold tree paths (the lookup cache, the forwarder's next-hop cache) are bounded in ports as
# well as in entries: with paths up to MAX_TREE_DEPTH ports, 4,096 entries alone could hold 2 x 4,096 x 16,036
# ports (hundreds of MiB). Past this many ports in all the least recently used entries go (the next-hop cache
# starts afresh). 2 bytes a port on the wire; in CPython 8 (ports up to 256, shared ints) to about 40.
MAX_CACHED_PORTS = 1 << 20
LOOKUP_RETRY = 1.0  # a lookup with no reply is sent again after at most this (and at most this often per destination
# once it has backed off): the first retry comes after LOOKUP_FIRST_RETRY, each wait doubling up to LOOKUP_RETRY, so
# a lookup lost while the tree forms costs a quarter second, not one (docs/ROUTING.md §4.2)
LOOKUP_FIRST_RETRY = 0.25
LOOKUP_GIVE_UP = 10.0  # a destination unanswered this long: its queued packets are dropped (counted)
MAX_PENDING_LOOKUPS = 256  # destinations being looked up at once; new ones past this are refused (counted)
MAX_QUEUED_PER_DESTINATION = 32  # packets waiting for a destination's lookup; the oldest is dropped past this
QUEUE_MAX_WAIT = 1.0  # a packet waits at most this long behind a forming route (lookup, key, handshake), then is
# dropped (counted queue_expired): late is worse than lost for what is sent first (a ping, a TCP SYN retries itself)
HOP_LIMIT = 2 * MAX_TREE_DEPTH + 2  # u16 hop limit of a routed packet (32074); a relay drops it (counted) at 1
PATH_BROKEN_INTERVAL = 1.0  # a relay sends at most one path-broken signal per source per this long

# --- routing: the root-independent fallback (axiomnet/lookup.py Pathfinder, axiomnet/forward.py; docs/ROUTING.md §4.1)
# A tree lookup unanswered for RING_AFTER, or a route declared dead, starts an expanding-ring search over all links:
# rounds of TTL 2, 4, 8, .., RING_MAX_TTL (a neighbour is reached over its link, never searched for), each waiting
# RING_STEP x TTL (clamped to RING_STEP_MIN..RING_STEP_MAX) for an answer; the answer's path becomes a source route.
RING_AFTER = 1.0  # three lookup tries (0, 0.25, 0.75 s): a tree lookup unanswered for a second is failing, not slow
RING_FIRST_TTL = 2
RING_TICK = 0.1  # the router steps ring searches and dead-path checks at most this often, between heartbeats too
# The widest round: how far a flood goes, a bound on its cost. It was MAX_TREE_DEPTH under protocol 3 and stays
# there (606) now that the tree may be deeper; a found path must fit the routed header (u16 TTL field: §6.7).
RING_MAX_TTL = 606
RING_STEP = 0.1
RING_STEP_MIN = 0.2
RING_STEP_MAX = 2.0
RING_INTERVAL = 10.0  # a source starts at most one ring search per destination per this long
RING_SOURCE_RATE = 0.5  # ring searches a source starts per second in all (token bucket) ...
RING_SOURCE_BURST = 4.0  # ... bucket depth; past it the search waits for the next tick (counted ring_limited)
# A relay floods at most RING_RELAY_BURST rounds per origin address, refilled at RING_RELAY_RATE per second (one
# search is at most 7 rounds), and likewise per target address and per incoming link with their own budgets; past
# any of them the round is dropped (counted). Every flood crosses every link, so the per-link rate is also what the
# whole network can search per second: a last resort, not a lookup service (docs/ROUTING.md §4.1).
RING_RELAY_RATE = 1.0
RING_RELAY_BURST = 8.0
RING_TARGET_RATE = 2.0
RING_TARGET_BURST = 16.0
RING_LINK_RATE = 10.0
RING_LINK_BURST = 20.0
MAX_RING_BUCKETS = 1024  # per-origin / per-target / per-link buckets a relay keeps; the least recently used goes
MAX_RING_SEEN = 4096  # (origin, nonce, TTL) of floods already forwarded; the oldest is forgotten past this
# ... and each is forgotten RING_SEEN_LIFETIME seconds after it came: the copies of one round arrive within the round
# (at most RING_STEP_MAX) and a path's delay, so without a time bound the table would fill to MAX_RING_SEEN with dead
# rounds (in the 12-node soak, over an hour) and hold them for good.
RING_SEEN_LIFETIME = 30.0
DEAD_PATH_AFTER = 2.0  # packets sent to a destination and nothing heard from it for this long: its route is dead
MAX_SOURCE_ROUTES = 1024  # destinations with a source route; the least recently used is forgotten past this
SOURCE_ROUTE_IDLE = 60.0  # a source route over which nothing came back for this long is dropped

# --- files ------------------------------------------------------------------------------------------
FILE_IO_TIMEOUT = 10.0  # bound on any identity file operation (seed failure #2)
ADMIN_REPLY_MAX = 4 * 1024 * 1024  # bytes of one admin reply line read by axiomnet-inspect; longer is a bad reply

# --- the front door: macs, cookies, key discovery (docs/PROTOCOL.md §3.5) -------------------------
MAC_SIZE = 16  # mac1 / mac2 of HANDSHAKE_INIT and HANDSHAKE_RESP (keyed BLAKE2s-128, as WireGuard)
COOKIE_NONCE_SIZE = 24  # random XChaCha20-Poly1305 nonce of a COOKIE_REPLY
# The responder stays "under load" (cookies demanded, per-source limits applied) this long after the half-open
# count fell below COOKIE_LOAD_THRESHOLD (wireguard-go's UnderLoadAfterTime), so load does not flap.
UNDER_LOAD_AFTER_TIME = 1.0
KEY_PROBE_CHALLENGE_SIZE = 16  # random bytes a KEY_PROBE carries and its KEY_REPLY echoes
KEY_REPLY_RATE = 50.0  # KEY_REPLY datagrams per second this node sends in all (token bucket) ...
KEY_REPLY_BURST = 100.0  # ... bucket depth; past it probes go unanswered (counted key_probes_limited)
# While the node-wide bucket is below half, each source (IPv4 address, IPv6 /64) is also held to this rate, so
# one noisy prober cannot use up everybody's replies; not applied otherwise (a spoofer cannot lock a victim out).
KEY_PROBE_RATE_PER_SOURCE = 2.0
KEY_PROBE_BURST_PER_SOURCE = 5.0

# --- admission: who gets a session slot (docs/PROTOCOL.md §3.6) ---------------------------------
# Sessions with a key nobody named (not a static peer's, not in allowed_keys), node-wide. Below it every source
# is admitted; at it a stranger takes a slot only from a source holding at least two more than its own (refused
# otherwise: refused_unpinned_limit). It keeps MAX_SESSIONS - MAX_UNPINNED_SESSIONS slots for named peers, who
# evict strangers of the source holding the most slots when the table is full.
MAX_UNPINNED_SESSIONS = 768
# New strangers' sessions one source may open: STRANGER_BURST_PER_SOURCE at once (a NAT full of nodes), then
# STRANGER_RATE_PER_SOURCE per second; past it a stranger is refused (refused_source_rate), which is load (above).
# There is no cap on how many a source holds: only on how fast one source can make us spawn sessions.
STRANGER_BURST_PER_SOURCE = 32
STRANGER_RATE_PER_SOURCE = 1.0
# A session actor tells the peer manager it heard its peer at most this often: the least recently active stranger
# evicted for a named peer is picked on activity at most this stale (sessions expire after minutes of silence).
# Every live link is heard at least every LINK_KEEPALIVE, so at 10 s each session reported on every keepalive:
# 1,000 messages a second to the peer manager at 10,000 sessions (its thread the busiest of an idle hub).
SESSION_ACTIVITY_REPORT = 60.0

# --- data plane: offloads and batches (axiomnet/offload.py, actors/tun.py, actors/socket.py) ------------------
# Largest UDP payload that software segmentation sizes TCP segments for: a 1500-byte underlay MTU less the IPv6
# (40) and UDP (8) headers. A datagram that is bigger anyway (a long routed path, offloads off) is IP-fragmented.
UNDERLAY_DATAGRAM_TARGET = 1452
# Tree ports (2 bytes each, both paths together) a routed header is assumed to carry when segments are sized.
ROUTED_PATH_ALLOWANCE = 16
# Bytes around an inner IP packet on the wire: link header and tag, routed header with the allowance, end-to-end
# header and tag. Software TSO cuts segments of at most UNDERLAY_DATAGRAM_TARGET minus this.
OVERLAY_OVERHEAD = 16 + 16 + 48 + 2 * ROUTED_PATH_ALLOWANCE + 16 + 16
READER_BATCH_BYTES = 128 * 1024  # bytes a reader drains into one batch (besides READER_BATCH_MAX reads); then it hands over
UDP_GSO_MAX_SEGMENTS = 64  # datagrams in one UDP_SEGMENT send (the kernel's limit before Linux 6.2 was 64)
UDP_GSO_MAX_BYTES = 65000  # bytes in one UDP_SEGMENT send (an IP datagram holds at most 64 KiB)
UDP_GRO_BUFFER = 65535  # bytes of one receive with UDP_GRO (the kernel coalesces at most 64 KiB)

# --- operations (admin socket, metrics, health) ------------------------------------------------------
ADMIN_GATHER_DEADLINE = 1.5  # the admin actor asks every actor at once; who has not answered by then is "unanswered"
ADMIN_CLIENT_TIMEOUT = 5.0  # axiomnet-inspect's default wait for a reply (more than the gather deadline)
ADMIN_REFUSAL_LOG_INTERVAL = 10.0  # one log line per refused uid per this many seconds; every refusal is counted
DEFAULT_METRICS_PORT = 9473  # the Prometheus HTTP listener's port when only "on" is asked for
DROP_SUMMARY_INTERVAL = 60.0  # drops since the last summary are logged (info; warning past the threshold) this often
DROP_SUMMARY_WARN = 1000  # more drops than this in one summary interval are logged as a warning
HEALTH_PEER_GRACE = 30.0  # a node with static peers and none established this long after start is degraded
HEALTH_MAILBOX_WARN = MAX_QUEUED_BATCHES // 2  # an actor's mailbox this deep is backpressure: degraded
WATCHDOG_MIN_INTERVAL = 1.0  # shortest interval between systemd WATCHDOG=1 notifications

# --- per-destination circuit breaker (seed hardening item 10) -------------------------------------
BREAKER_FAILURE_THRESHOLD = 5  # consecutive send failures to one endpoint open its breaker (sends skipped, counted)
BREAKER_COOLDOWN_INITIAL = 1.0  # an open breaker lets one probe through after this; a failed probe doubles it
BREAKER_COOLDOWN_MAX = 30.0  # cap of the doubled cool-down
MAX_BREAKERS = 4096  # endpoints with recent failures tracked; past it the least recently failing is forgotten

# --- timers: actors sleep until their next deadline (actors/base.py DeadlineTimer) ---------------------------
# A deadline timer whose wake-up found the actor's control lane full tells it again after this many seconds (the
# actor is busy then, and ticks on its own next deadline report; nothing waits longer than this for a full lane).
TIMER_RETRY = 0.05
