package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File modes. The database holds auth tokens and API secrets in clear, so
// it is readable by its owner only, whatever the directory's mode or the
// umask: the database file is created (or narrowed) to 0600 before SQLite
// opens it, and SQLite creates the -wal and -shm files with the database
// file's mode. A directory Open creates is 0700; an existing one is left
// as it is.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// restrictFiles prepares path's directory and files as above.
func restrictFiles(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&^fileMode != 0 {
			if err := os.Chmod(p, fileMode); err != nil {
				return fmt.Errorf("restrict %s to mode %o: %w", filepath.Base(p), fileMode, err)
			}
		}
	}
	return nil
}
