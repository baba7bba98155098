package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/chorus-sync/chorus/client"
)

// This example needs a running Chorus server (`chorus serve`) and a token
// from `chorus token --identity alice`, so it is compiled but not run.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, "eyJ…", client.Options{
		URL: "http://127.0.0.1:3000",
		TokenProvider: func(ctx context.Context) (string, error) {
			return "a fresh token from your backend", nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	doc, err := c.Document(ctx, "game", client.OpenOrCreate)
	if err != nil {
		log.Fatal(err)
	}
	events := doc.Events()
	if err := doc.Set(ctx, map[string]string{"turn": "x"}); err != nil {
		log.Fatal(err)
	}
	// Increment a counter without losing concurrent updates.
	err = doc.Mutate(ctx, func(old json.RawMessage) (json.RawMessage, error) {
		var v struct{ N int }
		_ = json.Unmarshal(old, &v)
		v.N++
		return json.Marshal(v)
	})
	if err != nil {
		log.Fatal(err)
	}
	for ev := range events {
		fmt.Println(ev.Type, ev.ID, string(ev.Data), ev.Local)
	}
}

func ExampleMap_Mutate() {
	ctx := context.Background()
	var c *client.Client // from client.New
	m, err := c.Map(ctx, "scores", client.OpenOrCreate)
	if err != nil {
		log.Fatal(err)
	}
	it, err := m.Mutate(ctx, "alice", func(old json.RawMessage) (json.RawMessage, error) {
		var s struct{ Points int }
		_ = json.Unmarshal(old, &s) // {} when the key is new
		s.Points += 10
		return json.Marshal(s)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(it.Key, string(it.Data))
}
