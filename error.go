package chorus

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is the one error type that crosses Chorus's API edges. It carries the
// HTTP status and the numeric Twilio error code a client sees, a message that
// is safe to show to that client, and an optional cause that is never
// serialized.
type Error struct {
	Status  int    // HTTP status, e.g. 404
	Code    int    // Twilio error code, e.g. 54100
	Message string // client-safe text
	Err     error  // cause, for logs only
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// MoreInfo is the documentation link Twilio puts in every error body.
func (e *Error) MoreInfo() string {
	return fmt.Sprintf("https://www.twilio.com/docs/errors/%d", e.Code)
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, chorus.ErrDocumentNotFound) works on wrapped errors.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Status == e.Status
}

// Errorf returns a new *Error like base with a formatted message.
func Errorf(base *Error, format string, args ...any) *Error {
	return &Error{Status: base.Status, Code: base.Code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns a copy of base whose cause is err.
func Wrap(base *Error, err error) *Error {
	return &Error{Status: base.Status, Code: base.Code, Message: base.Message, Err: err}
}

// AsError finds the *Error in err's chain. Anything that is not one becomes
// a generic 500 whose cause is err; callers log it.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Wrap(ErrInternal, err)
}

// ErrorCode returns the Twilio code of err, or 0 when err carries none.
func ErrorCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func newErr(status, code int, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// The error table. Append only: codes and statuses are part of the wire
// contract with the official Twilio clients.
var (
	// Platform.
	ErrInternal        = newErr(http.StatusInternalServerError, 20500, "Internal server error")
	ErrUnavailable     = newErr(http.StatusServiceUnavailable, 20503, "Service unavailable")
	ErrAuthenticate    = newErr(http.StatusUnauthorized, 20003, "Authenticate")
	ErrNotFound        = newErr(http.StatusNotFound, 20404, "The requested resource was not found")
	ErrMethod          = newErr(http.StatusMethodNotAllowed, 20004, "Method not allowed")
	ErrTooManyRequests = newErr(http.StatusTooManyRequests, 20429, "Too many requests")
	// ErrUnsupportedMediaType refuses a write whose body is not a form
	// (Twilio's 20xxx codes mirror the HTTP status: 20404, 20429…).
	ErrUnsupportedMediaType = newErr(http.StatusUnsupportedMediaType, 20415, "Unsupported Media Type")

	// Browsers: a request made by a page of another site.
	ErrForbiddenRequest = newErr(http.StatusForbidden, 20403, "Forbidden")

	// Access tokens.
	ErrTokenInvalid        = newErr(http.StatusUnauthorized, 20101, "Invalid Access Token")
	ErrTokenHeader         = newErr(http.StatusUnauthorized, 20102, "Invalid Access Token header")
	ErrTokenIssuer         = newErr(http.StatusUnauthorized, 20103, "Invalid Access Token issuer/subject")
	ErrTokenExpired        = newErr(http.StatusUnauthorized, 20104, "Access Token expired or expiration date invalid")
	ErrTokenNotYetValid    = newErr(http.StatusUnauthorized, 20105, "Access Token not yet valid")
	ErrTokenGrants         = newErr(http.StatusUnauthorized, 20106, "Invalid Access Token grants")
	ErrTokenSignature      = newErr(http.StatusUnauthorized, 20107, "Invalid Access Token signature")
	ErrTokenLifetime       = newErr(http.StatusUnauthorized, 20157, "Expiration Time Exceeds Maximum Time Allowed")
	ErrTokenNotJWT         = newErr(http.StatusUnauthorized, 20160, "Invalid Token")
	ErrTokenUpdateRejected = newErr(http.StatusUnauthorized, 51130, "Updated token was rejected by server")

	// Sync: generic.
	ErrInvalidIfMatch    = newErr(http.StatusBadRequest, 54003, "Invalid If-Match header")
	ErrTooLarge          = newErr(http.StatusRequestEntityTooLarge, 54006, "Request entity too large")
	ErrForbidden         = newErr(http.StatusForbidden, 54007, "Access forbidden for identity")
	ErrInvalidJSON       = newErr(http.StatusBadRequest, 54008, "Invalid JSON")
	ErrRateLimited       = newErr(http.StatusTooManyRequests, 54009, "Rate limit exceeded")
	ErrNoParameters      = newErr(http.StatusBadRequest, 54010, "No parameters specified")
	ErrInvalidTTL        = newErr(http.StatusBadRequest, 54011, "Invalid TTL: expected an integer from 0 to 31536000")
	ErrServiceNotFound   = newErr(http.StatusNotFound, 54050, "Service Instance not found")
	ErrInvalidWebhookURL = newErr(http.StatusBadRequest, 54051, "Invalid webhook URL")
	ErrInvalidFriendly   = newErr(http.StatusBadRequest, 54053, "Invalid friendly name")
	ErrServiceAccount    = newErr(http.StatusForbidden, 54056, "Account cannot access requested Service Instance")
	ErrInvalidParameter  = newErr(http.StatusBadRequest, 54060, "Invalid parameter")

	// Documents.
	ErrDocumentNotFound = newErr(http.StatusNotFound, 54100, "Document not found")
	ErrDocumentData     = newErr(http.StatusBadRequest, 54101, "Invalid Document data")
	ErrDocumentRevision = newErr(http.StatusPreconditionFailed, 54103, "Document revision mismatch")

	// Lists.
	ErrListNotFound     = newErr(http.StatusNotFound, 54150, "List not found")
	ErrListItemNotFound = newErr(http.StatusNotFound, 54151, "List Item not found")
	ErrListItemRevision = newErr(http.StatusPreconditionFailed, 54155, "List Item revision mismatch")
	ErrListItemData     = newErr(http.StatusBadRequest, 54156, "Invalid List Item data")

	// Maps.
	ErrMapNotFound     = newErr(http.StatusNotFound, 54200, "Map not found")
	ErrMapItemNotFound = newErr(http.StatusNotFound, 54201, "Map Item not found")
	ErrMapItemRevision = newErr(http.StatusPreconditionFailed, 54205, "Map Item revision mismatch")
	ErrMapItemData     = newErr(http.StatusBadRequest, 54206, "Invalid Map Item data")
	ErrMapItemExists   = newErr(http.StatusConflict, 54208, "Map Item already exists")
	ErrMapItemKey      = newErr(http.StatusBadRequest, 54209, "Invalid Map Item key: expected a string with length 1-320")

	// Streams.
	ErrStreamNotFound    = newErr(http.StatusNotFound, 54250, "Message Stream not found")
	ErrStreamMessageData = newErr(http.StatusBadRequest, 54251, "Invalid Stream Message data")

	// Unique names, identities, permissions.
	ErrUniqueNameNotFound = newErr(http.StatusNotFound, 54300, "Unique name not found")
	ErrUniqueNameExists   = newErr(http.StatusConflict, 54301, "Unique name already exists")
	ErrUniqueNameInvalid  = newErr(http.StatusBadRequest, 54302, "Invalid unique name: expected a string with length 1-320 not matching the SID pattern [A-Z]{2}[a-f0-9]{32}")
	ErrIdentityInvalid    = newErr(http.StatusBadRequest, 54351, "Invalid identity: expected a string with length 1-256")
	ErrPermissionNotFound = newErr(http.StatusNotFound, 54354, "Permission not found")

	// Paging and queries.
	ErrTooManySubscriptions = newErr(http.StatusTooManyRequests, 54419, "Too many subscriptions for this connection")
	ErrInvalidOrder         = newErr(http.StatusBadRequest, 54451, "Invalid Order: expected asc or desc")
	ErrInvalidBounds        = newErr(http.StatusBadRequest, 54452, "Invalid Bounds: expected inclusive or exclusive")
	ErrInvalidPageToken     = newErr(http.StatusBadRequest, 54453, "Invalid PageToken")
	ErrInvalidPageSize      = newErr(http.StatusBadRequest, 54454, "Invalid PageSize: expected an integer from 1 to 1000")
	ErrInvalidIndex         = newErr(http.StatusBadRequest, 54458, "Invalid List Item index: expected a non-negative integer")

	// Credentials (API v2010 Keys, auth token rotation): a standard API key
	// may not manage credentials.
	ErrPermissionDenied = newErr(http.StatusForbidden, 20003, "Permission Denied: only the auth token or a main API key may manage keys and auth tokens")
)

// Live Query (liveQuery and instantQuery over Maps).
var (
	ErrInvalidIndexName = newErr(http.StatusBadRequest, 54502, "Invalid index name")
	ErrInvalidQuery     = newErr(http.StatusBadRequest, 54507, "Invalid query")
	ErrQueryOperators   = newErr(http.StatusBadRequest, 54509, "Query expression contains too many operators")
	ErrQueryArrayItems  = newErr(http.StatusBadRequest, 54510, "Query expression contains an array with too many items")
)
