"""Every timer and bound of AxiomNet, named once (the spirit of wireguard-go's device/constants.go).

Each bound says what happens when it is hit. Times are in seconds (floats), counts are plain ints.
"""

from __future__ import annotations

# --- protocol identity --------------------------------------------------------------------------
PROTOCOL_VERSION = 1  # 4-bit version in the switch header; anything else is MalformedPacket
NOISE_PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"
# Bound into every handshake: a peer speaking another protocol or version fails at message 2.
NOISE_PROLOGUE = b"AxiomNet/1 " + NOISE_PROTOCOL_NAME

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

# --- node / actors -------------------------------------------------------------------------------
DEFAULT_UDP_PORT = 7443
DEFAULT_TUN_NAME = "axn0"
DEFAULT_MTU = 1400
MAX_SESSIONS = 1024  # live SessionActors; a new peer past this is refused (logged, counted)
HEARTBEAT_INTERVAL = 1.0  # link heartbeat with coordinates and load, per peer
PEER_DEAD_AFTER = 6.0  # no authenticated packet from a peer for this long: its routes are withdrawn
# Heartbeat sequence numbers start from the sender's clock in ms: a drop larger than this (60 s) is a restart
# with the clock stepped back, not reordering; it starts a new epoch instead of being ignored.
HEARTBEAT_SEQ_EPOCH_JUMP = 60_000
MAX_COORD_CACHE = 4096  # destination coordinates the router remembers; the least recently used is forgotten
DIAL_BACKOFF_INITIAL = 0.2  # first re-dial of a lost static peer; doubles with jitter
DIAL_BACKOFF_MAX = 5.0  # cap of the re-dial backoff
READER_POLL_TIMEOUT = 0.5  # reader threads wake at least this often to notice shutdown
READER_BATCH_MAX = 64  # datagrams/packets a reader drains into one batch
MAX_QUEUED_BATCHES = 256  # batches queued at one data-path actor; past this new batches are dropped, counted
ACTOR_STOP_TIMEOUT = 2.0  # each actor gets this long to stop on shutdown
SHUTDOWN_DEADLINE = 5.0  # the whole daemon is gone within this after SIGTERM
RESTART_BACKOFF_INITIAL = 0.1  # supervisor: first restart delay of a crashed actor; doubles
RESTART_BACKOFF_MAX = 5.0
RESTART_INTENSITY = 5  # more than this many restarts ...
RESTART_WINDOW = 30.0  # ... within this many seconds: the daemon stops and exits non-zero
ADMIN_REQUEST_MAX = 4096  # bytes of one admin request line
ADMIN_TIMEOUT = 2.0  # admin socket read/ask timeout

# --- files ------------------------------------------------------------------------------------------
FILE_IO_TIMEOUT = 10.0  # bound on any identity file operation (seed failure #2)
ADMIN_REPLY_MAX = 4 * 1024 * 1024  # bytes of one admin reply line read by axiomnet-inspect; longer is a bad reply

# --- per-destination circuit breaker (seed hardening item 10) -------------------------------------
BREAKER_FAILURE_THRESHOLD = 5  # consecutive send failures to one endpoint open its breaker (sends skipped, counted)
BREAKER_COOLDOWN_INITIAL = 1.0  # an open breaker lets one probe through after this; a failed probe doubles it
BREAKER_COOLDOWN_MAX = 30.0  # cap of the doubled cool-down
MAX_BREAKERS = 4096  # endpoints with recent failures tracked; past it the least recently failing is forgotten
