// Command chorus is the Chorus server and its admin tool: a self-hosted,
// Twilio Sync compatible real-time state-sync service in one binary.
//
//	chorus serve   [--listen ADDR] [--data-dir DIR] [--public-url URL] [--token-ttl 1h] [--log-level info]
//	               [--store postgres://…] [--bus nats://…] [--node NAME] [--dev-tokens[=false]]
//	chorus token   --identity NAME [--ttl 1h] [--service IS…] [--data-dir DIR]
//	chorus admin credentials [--data-dir DIR]
//	chorus admin keys list|create [--name NAME]|revoke SK… [--url URL] [--data-dir DIR]
//	chorus migrate --store postgres://… [--from-data-dir DIR [--overwrite] [--json]]
//	chorus import  [--from https://sync.twilio.com] [--service IS…|NAME] [--data-dir DIR | --store postgres://…]
//	               [--dry-run] [--overwrite] [--verify] [--json] [--concurrency N] [--attempts N]
//	chorus backup  [--data-dir DIR] --out FILE
//	chorus restore [--data-dir DIR] FILE
//	chorus bench   --url URL[,URL…] [--conns N] [--docs N] [--writers N] [--rate N/s] [--duration D] [--via client|rest]
//	chorus version
//
// Credentials come from TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
// TWILIO_API_KEY, TWILIO_API_SECRET and TWILIO_SYNC_SERVICE_SID when set;
// otherwise `chorus serve` generates them on first start and stores them in
// the data directory (CHORUS_DATA_DIR, default ./chorus-data). Operator
// secrets shorter than 32 characters are refused (exit code 2).
// `chorus admin keys` manages API keys through a running server's API
// v2010 Keys resource (CHORUS_URL), signing in with TWILIO_ACCOUNT_SID and
// TWILIO_AUTH_TOKEN or with the data directory's credentials.
//
// The command only parses flags and the environment and wires the packages
// under internal/ together; run is the testable entry point.
package main
