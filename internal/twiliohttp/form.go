package twiliohttp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/chorus-sync/chorus"
)

// Request parameters, as the helper libraries send them (test/SDK-NOTES.md,
// "REST helper libraries"): every write puts its parameters in a POST body,
// application/x-www-form-urlencoded for twilio-node 3.41.1+, twilio-go and
// twilio-python, multipart/form-data for twilio-node up to 3.40.0; reads
// put paging and item filters in the query string, and deletes send none.
//
// A POST body of any other type, or one that cannot be parsed, is refused:
// answering as if no parameters had been sent would let a create succeed
// having dropped its data.

const (
	// MaxFormParts bounds the parts of a multipart body (the widest Sync
	// write has five parameters); the body as a whole, part headers
	// included, is bounded by ReadForm's maxBody.
	MaxFormParts = 64
	// maxBoundary is RFC 2046's limit on a multipart boundary.
	maxBoundary = 70
)

// Media types of form bodies.
const (
	mediaURLEncoded = "application/x-www-form-urlencoded"
	mediaMultipart  = "multipart/form-data"
)

// ReadForm returns the parameters of r, as every Twilio-style API of the
// server reads them: for a POST, the form body followed by the query
// string (body values first, as net/http's Request.Form); for other
// methods the query string alone, and a body with anything but blanks or
// "{}" in it is refused (54060). The body is bounded to maxBody bytes (413, 54006, beyond). A
// body the server's edge parsed already (ParsedForm) is not parsed again.
func ReadForm(w http.ResponseWriter, r *http.Request, maxBody int64) (url.Values, error) {
	if pf, ok := r.Body.(*ParsedForm); ok && int64(pf.Size) <= maxBody && r.Method == http.MethodPost {
		// readBody would parse the same bytes the same way.
		if err := CheckContentEncoding(r); err != nil {
			return nil, err
		}
		return mergeQuery(r, pf.Values)
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	}
	return readForm(r)
}

// readForm is ReadForm on a body already bounded.
func readForm(r *http.Request) (url.Values, error) {
	query, err := readQuery(r)
	if err != nil {
		return nil, err
	}
	if r.Method != http.MethodPost {
		return query, refuseBody(r)
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	return appendValues(body, query), nil
}

// mergeQuery is readForm for a POST whose form body is already parsed:
// body's values, then the query string's.
func mergeQuery(r *http.Request, body url.Values) (url.Values, error) {
	query, err := readQuery(r)
	if err != nil {
		return nil, err
	}
	return appendValues(body, query), nil
}

// readQuery parses r's query string.
func readQuery(r *http.Request) (url.Values, error) {
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, chorus.Wrap(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid query string"), err)
	}
	return query, nil
}

// appendValues appends more's values to form's, key by key, and returns form.
func appendValues(form, more url.Values) url.Values {
	for k, vs := range more {
		form[k] = append(form[k], vs...)
	}
	return form
}

// refuseBody refuses the body of a request other than a POST: reads and
// removals take their parameters in the query string, and one sent in a
// body would be ignored (DELETE with Bogus=1 in its body deleted). A body
// without parameters passes, with or without a Content-Type: empty
// (twilio-go sends one), blank, or an empty JSON object (generic HTTP
// wrappers send "{}").
func refuseBody(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	const most = 64 // more is not a body without parameters
	b, err := io.ReadAll(io.LimitReader(r.Body, most+1))
	if err != nil {
		return bodyErr(err, "")
	}
	if bare := strings.Join(strings.Fields(string(b)), ""); len(b) > most || bare != "" && bare != "{}" {
		return chorus.Errorf(chorus.ErrInvalidParameter,
			"Invalid request body: a %s takes its parameters in the query string, not in a body", Clip(r.Method))
	}
	return nil
}

// readBody parses the form body of a POST by its Content-Type. A body
// with a Content-Encoding (gzip, br…) is refused: the server does not
// decode one, and parsing the encoded bytes would drop or garble the
// parameters.
func readBody(r *http.Request) (url.Values, error) {
	if err := CheckContentEncoding(r); err != nil {
		return nil, err
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		// A POST without a body (curl -X POST) has no Content-Type; a
		// body without one has no defined meaning.
		n, err := io.Copy(io.Discard, io.LimitReader(r.Body, 1))
		if err != nil {
			return nil, bodyErr(err, "")
		}
		if n > 0 {
			return nil, chorus.Errorf(chorus.ErrUnsupportedMediaType,
				"Missing Content-Type: send parameters as %s or %s", mediaURLEncoded, mediaMultipart)
		}
		return url.Values{}, nil
	}
	media, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, chorus.Wrap(chorus.Errorf(chorus.ErrUnsupportedMediaType,
			"Invalid Content-Type %q: send parameters as %s or %s", Clip(ct), mediaURLEncoded, mediaMultipart), err)
	}
	switch media {
	case mediaURLEncoded:
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, bodyErr(err, media)
		}
		f, err := url.ParseQuery(string(b))
		if err != nil {
			return nil, bodyErr(err, media)
		}
		return f, nil
	case mediaMultipart:
		boundary := params["boundary"]
		if boundary == "" || len(boundary) > maxBoundary {
			return nil, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid request body: %s needs a boundary of 1 to %d characters", mediaMultipart, maxBoundary)
		}
		// twilio-node 3.x sends an empty body, not even a closing
		// boundary, for a write without parameters.
		br := bufio.NewReader(r.Body)
		if _, err := br.Peek(1); err == io.EOF { // bufio returns it bare
			return url.Values{}, nil
		} else if err != nil {
			return nil, bodyErr(err, media)
		}
		return readMultipart(multipart.NewReader(br, boundary))
	}
	return nil, chorus.Errorf(chorus.ErrUnsupportedMediaType,
		"Unsupported Content-Type %q: send parameters as %s or %s", Clip(media), mediaURLEncoded, mediaMultipart)
}

// readMultipart reads the fields of a multipart/form-data body into memory
// (never to temporary files), at most MaxFormParts of them. A file part is
// refused: no Sync parameter is a file.
func readMultipart(mr *multipart.Reader) (url.Values, error) {
	f := url.Values{}
	for n := 0; ; n++ {
		p, err := mr.NextPart()
		// Only a bare io.EOF is the end: NextPart wraps the io.EOF of a
		// body cut short before its closing boundary.
		if err == io.EOF {
			return f, nil
		}
		if err != nil {
			return nil, bodyErr(err, mediaMultipart)
		}
		if n == MaxFormParts {
			return nil, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid request body: more than %d form fields", MaxFormParts)
		}
		name := p.FormName()
		if name == "" {
			return nil, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid request body: a %s part without a form-data name", mediaMultipart)
		}
		if p.FileName() != "" {
			return nil, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid parameter %s: file uploads are not supported", Clip(name))
		}
		v, err := io.ReadAll(p)
		if err != nil {
			return nil, bodyErr(err, mediaMultipart)
		}
		f[name] = append(f[name], string(v))
	}
}

// bodyErr maps a failure reading or parsing the body: over the size limit
// is 54006, anything else a malformed body (54060).
func bodyErr(err error, media string) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return chorus.Wrap(chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: the body exceeds %d bytes", mbe.Limit), err)
	}
	if media == "" {
		return chorus.Wrap(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid request body"), err)
	}
	return chorus.Wrap(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid request body: malformed %s", media), fmt.Errorf("httpapi: read form: %w", err))
}

// CheckContentEncoding refuses (415, 20415) a request body with a
// Content-Encoding other than identity.
func CheckContentEncoding(r *http.Request) error {
	for _, v := range r.Header.Values("Content-Encoding") {
		for enc := range strings.SplitSeq(v, ",") {
			if enc = strings.TrimSpace(enc); enc != "" && !strings.EqualFold(enc, "identity") {
				return chorus.Errorf(chorus.ErrUnsupportedMediaType, "Unsupported Content-Encoding %q: send the body unencoded", Clip(enc))
			}
		}
	}
	return nil
}

// Clip shortens s for an error message.
func Clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// PagingParams are the paging parameters of a Twilio list operation, as
// the helper libraries send them (PageToken and Page when they follow
// next_page_url).
var PagingParams = []string{"PageSize", "Page", "PageToken"}

// CheckParams refuses a request with a parameter its operation does not
// take (params), or with one given more than once: either would otherwise
// be ignored, and the request answered as a success after ignoring what
// it asked for (uniqueName=… for UniqueName created a document without
// its name, UniqueName on an update renamed nothing, Data=a&Data=b stored
// a).
func CheckParams(f url.Values, params []string) error {
	var unknown []string
	for name, vs := range f {
		switch {
		case !slices.Contains(params, name):
			unknown = append(unknown, name)
		case len(vs) > 1:
			return chorus.Errorf(chorus.ErrInvalidParameter, "Parameter %s is given %d times: give it once", Clip(name), len(vs))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	if len(params) == 0 {
		return chorus.Errorf(chorus.ErrInvalidParameter, "Unknown parameter %s: this request takes none", Clip(unknown[0]))
	}
	return chorus.Errorf(chorus.ErrInvalidParameter, "Unknown parameter %s: this request takes %s (names are case-sensitive)",
		Clip(unknown[0]), strings.Join(params, ", "))
}
