package transfer

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
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

func checkData(data json.RawMessage) error {
	if len(data) == 0 || data[0] != '{' {
		return fmt.Errorf("data is not a JSON object")
	}
	if len(data) > chorus.MaxDataBytes {
		return fmt.Errorf("data is %d bytes, over the %d limit", len(data), chorus.MaxDataBytes)
	}
	return nil
}

func checkService(s *chorus.Service) error {
	if s.UniqueName != "" {
		if err := checkLen("unique name", s.UniqueName, chorus.MaxUniqueNameLen); err != nil || chorus.LooksLikeSID(s.UniqueName) {
			return fmt.Errorf("invalid unique name %q", clip(s.UniqueName))
		}
	}
	return nil
}

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
		if err := checkData(o.Data); err != nil {
			return err
		}
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

func checkItems(items []*chorus.Item) error {
	for _, it := range items {
		if it.Kind == chorus.KindMap {
			if err := checkLen("map key", it.Key, chorus.MaxKeyLen); err != nil {
				return err
			}
		}
		if err := checkData(it.Data); err != nil {
			return fmt.Errorf("item %d %q: %w", it.Index, clip(it.Key), err)
		}
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
