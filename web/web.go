package web

import (
	"embed"
	"io/fs"
)

//go:embed all:static
var static embed.FS

// FS returns the quickstart's files, rooted at the directory that holds
// index.html.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // "static" is a constant, valid path
	}
	return sub
}
