package engine

import (
	"fmt"
	"testing"
)

// TestCacheEpoch checks that a read begun before a drop does not fill the
// cache after it, and that the cache stays bounded.
func TestCacheEpoch(t *testing.T) {
	var c cache[int]
	epoch := c.begin()
	c.drop() // a change committed while the read was in flight
	c.put(epoch, "a", 1)
	if _, ok := c.get("a"); ok {
		t.Fatal("a read begun before a drop filled the cache")
	}
	c.put(c.begin(), "a", 2)
	if v, ok := c.get("a"); !ok || v != 2 {
		t.Fatalf("get = %d, %v; want 2", v, ok)
	}
	for i := range 3 * cacheMax {
		c.put(c.begin(), fmt.Sprint(i), i)
	}
	if n := len(c.m); n > cacheMax {
		t.Fatalf("%d entries, want at most %d", n, cacheMax)
	}
	c.off = true
	c.drop()
	c.put(c.begin(), "a", 3)
	if _, ok := c.get("a"); ok {
		t.Fatal("a cache turned off was filled")
	}
}
