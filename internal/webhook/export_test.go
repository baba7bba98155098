package webhook

// SetAfterRecord makes every sender call f after it recorded an attempt,
// until the returned function restores the default (none).
func SetAfterRecord(f func()) (restore func()) {
	afterRecord.Store(&f)
	return func() { afterRecord.Store(nil) }
}
