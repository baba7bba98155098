package gateway

// Log attribute keys.
const (
	logConn     = "conn"
	logIdentity = "identity"
	logService  = "service"
	logObject   = "object"
	logError    = "err"
	logMethod   = "method"
	logPath     = "path"
	logReason   = "reason"
)
