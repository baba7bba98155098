package sqlite

import (
	"context"
	"database/sql"
	"errors"
)

// conn is one database connection with its cache of prepared statements.
// It is used by one goroutine at a time: the writer, or the View holding it.
type conn struct {
	c     *sql.Conn
	stmts map[string]*sql.Stmt
}

func newConn(c *sql.Conn) *conn {
	return &conn{c: c, stmts: make(map[string]*sql.Stmt)}
}

// stmt returns the prepared statement of query, preparing it once.
func (c *conn) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := c.stmts[query]; ok {
		return st, nil
	}
	st, err := c.c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = st
	return st, nil
}

func (c *conn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (c *conn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// scanRow runs query, which takes no arguments, and scans its one row into
// dest.
func (c *conn) scanRow(ctx context.Context, query string, dest ...any) error {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return err
	}
	return st.QueryRowContext(ctx).Scan(dest...)
}

func (c *conn) close() error {
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	clear(c.stmts)
	errs = append(errs, c.c.Close())
	return errors.Join(errs...)
}
