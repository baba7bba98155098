package nats

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
)

// MinSecretLen is the shortest cluster secret WithSecret accepts.
const MinSecretLen = 32

// macLen is the length of the HMAC-SHA256 tag that follows each event.
const macLen = sha256.Size

// WithSecret signs every published event with HMAC-SHA256 under secret
// (over the subject and the payload) and drops, counting them in
// Stats.Forged, received events whose tag is missing or wrong. Every node
// of a cluster must use the same secret: it is what makes an event the
// cluster's, even for a client that NATS lets publish on the subjects.
// (Replays of genuine events are harmless: the gateway drops event IDs it
// has delivered.)
func WithSecret(secret []byte) Option { return func(o *options) { o.secret = secret } }

func checkSecret(secret []byte) error {
	if secret != nil && len(secret) < MinSecretLen {
		return errors.New("nats: cluster secret shorter than 32 bytes")
	}
	return nil
}

// appendMAC appends the tag of subject and payload to payload.
func appendMAC(secret []byte, subject string, payload []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(subject))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(payload)
}

// verifyMAC returns the payload of a signed message, or false.
func verifyMAC(secret []byte, subject string, data []byte) ([]byte, bool) {
	if len(data) < macLen {
		return nil, false
	}
	payload, tag := data[:len(data)-macLen], data[len(data)-macLen:]
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(subject))
	m.Write([]byte{0})
	m.Write(payload)
	return payload, hmac.Equal(m.Sum(nil), tag)
}
