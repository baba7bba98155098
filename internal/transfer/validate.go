package transfer

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// The import writes below the engine, so it checks what a source sends
// against the limits the engine enforces on writes (Twilio's own): a
// record that breaks them is refused and reported, never stored.

func checkLen(what, s string, max int) error {
	n := utf8.RuneCountInString(s)
	if n < 1 || n > max || !utf8.ValidString(s) {
		return fmt.Errorf("%s %q: want 1 to %d characters of UTF-8", what, clip(s), max)
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// checkData checks data as the engine checks a write's (a JSON object of
// valid UTF-8, at most MaxDataBytes once compacted) and returns it
// compacted, as every write path stores it: the REST and CDS answers copy
// stored data into their JSON as it is, so a store source (chorus migrate)
// must not bring in anything else.
func checkData(data json.RawMessage) (json.RawMessage, error) {
	if len(data) == 0 || data[0] != '{' {
		return nil, fmt.Errorf("data is not a JSON object")
	}
	compacted, ok := chorus.CompactJSON(data)
	if !ok {
		return nil, fmt.Errorf("data is not valid JSON")
	}
	if len(compacted) > chorus.MaxDataBytes {
		return nil, fmt.Errorf("data is %d bytes, over the %d limit", len(compacted), chorus.MaxDataBytes)
	}
	return compacted, nil
}

// checkWebhookURL checks a service's webhook URL as the API does when one
// is set (webhook.Policy.CheckURL), except for private addresses, which
// depend on how the target serves (--webhooks-allow-private) and are
// checked again at every delivery.
func checkWebhookURL(raw string) error {
	return webhook.Policy{AllowPrivate: true}.CheckURL(raw)
}

func checkService(s *chorus.Service) error {
	if s.UniqueName != "" {
		if err := checkLen("unique name", s.UniqueName, chorus.MaxUniqueNameLen); err != nil || chorus.LooksLikeSID(s.UniqueName) {
			return fmt.Errorf("invalid unique name %q", clip(s.UniqueName))
		}
	}
	return nil
}

// checkObject checks o and compacts a document's data in place.
func checkObject(o *chorus.Object) error {
	if o.UniqueName != "" {
		if err := checkLen("unique name", o.UniqueName, chorus.MaxUniqueNameLen); err != nil {
			return err
		}
		if chorus.LooksLikeSID(o.UniqueName) {
			return fmt.Errorf("unique name %q looks like a SID", o.UniqueName)
		}
	}
	if o.Kind == chorus.KindDocument {
		d, err := checkData(o.Data)
		if err != nil {
			return err
		}
		o.Data = d
	}
	if o.Revision < 0 {
		return fmt.Errorf("negative revision")
	}
	return checkCreatedBy(o.CreatedBy)
}

func checkCreatedBy(s string) error {
	if len(s) > 4*chorus.MaxIdentityLen || !utf8.ValidString(s) {
		return fmt.Errorf("created_by %q: want an identity", clip(s))
	}
	return nil
}

// checkItems checks items and compacts their data in place.
func checkItems(items []*chorus.Item) error {
	for _, it := range items {
		if it.Kind == chorus.KindMap {
			if err := checkLen("map key", it.Key, chorus.MaxKeyLen); err != nil {
				return err
			}
		}
		d, err := checkData(it.Data)
		if err != nil {
			return fmt.Errorf("item %d %q: %w", it.Index, clip(it.Key), err)
		}
		it.Data = d
		if err := checkCreatedBy(it.CreatedBy); err != nil {
			return err
		}
		if it.Revision < 0 {
			return fmt.Errorf("item %d %q: negative revision", it.Index, clip(it.Key))
		}
	}
	return nil
}

func checkPermissions(ps []*chorus.Permission) error {
	for _, p := range ps {
		if err := checkLen("permission identity", p.Identity, chorus.MaxIdentityLen); err != nil {
			return err
		}
	}
	return nil
}
