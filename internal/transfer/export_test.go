package transfer

// SetSpoolMem sets how many bytes of items an object's spool keeps in
// memory before it moves to a file.
func SetSpoolMem(o *Options, n int) { o.spoolMem = n }
