-- Prosody under bench/run.sh (doc/performance.md); Debian's prosody 0.12.
-- @NAMES@ are filled in by run.sh; everything listens on 127.0.0.1 only.
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { warn = "@DIR@/prosody.log" }
daemonize = false
run_as_root = true

interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { @C2S_PORT@ }
c2s_direct_tls_ports = { @TLS_PORT@ }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }

-- The same job as Pigeon's configuration: roster, offline storage,
-- disco, ping, in-band registration (provisioning), and XEP-0198.
modules_enabled = {
	"roster"; "saslauth"; "tls"; "disco"; "ping"; "offline";
	"register"; "smacks";
}
modules_disabled = { "s2s" }

c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"

-- Provisioning registers many accounts from 127.0.0.1 in a row.
allow_registration = true
registration_whitelist = { "127.0.0.1" }
registration_throttle_max = 1000000

certificate = "@CERT@"
ssl = { certificate = "@CERT@"; key = "@KEY@"; }

VirtualHost "localhost"
	ssl = { certificate = "@CERT@"; key = "@KEY@"; }
