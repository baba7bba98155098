// Package twiliohttp reads requests and writes responses the way Twilio's
// APIs do: parameters from urlencoded or multipart form bodies and the
// query string (ReadForm), JSON bodies with HTML characters left unescaped
// (so data round-trips byte for byte), and errors as {code, message,
// more_info, status} from a *chorus.Error. It is shared by the REST v1
// API, the v2010 Keys API and the admin API.
//
// Its functions are safe for concurrent use; each writes one response.
package twiliohttp
