package mem_test

import (
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
	"github.com/chorus-sync/chorus/internal/bus/mem"
)

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t testing.TB) chorus.Bus {
		b := mem.New()
		t.Cleanup(func() { b.Close() })
		return b
	})
}
