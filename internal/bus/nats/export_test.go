package nats

// ReceivedMsgs returns the messages b's connection has read from the
// server, whether or not a subscription handled them (tests).
func ReceivedMsgs(b *Bus) uint64 { return b.nc.Stats().InMsgs }
