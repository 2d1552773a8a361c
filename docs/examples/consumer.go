// A pollhook webhook consumer (Go, net/http): verify, then deduplicate, then order.
//
//	go get github.com/standard-webhooks/libraries/go
//	POLLHOOK_WEBHOOK_SECRET=whsec_... go run consumer.go
package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"sync"

	standardwebhooks "github.com/standard-webhooks/libraries/go"
)

type event struct {
	Type string `json:"type"`
	Data struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		Sequence int    `json:"sequence"`
	} `json:"data"`
}

func main() {
	webhook, err := standardwebhooks.NewWebhook(os.Getenv("POLLHOOK_WEBHOOK_SECRET"))
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	seenIDs := map[string]bool{}     // in production: a table with a unique key on webhook-id
	lastSequence := map[string]int{} // task id -> the highest sequence applied

	http.HandleFunc("/hooks/pollhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20)) // the raw body, exactly as sent
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		// The signature, and a timestamp within 5 minutes.
		if err := webhook.Verify(body, r.Header); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var e event
		if err := json.Unmarshal(body, &e); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		eventID := r.Header.Get("webhook-id") // the same on every retry of one event
		mu.Lock()
		defer mu.Unlock()
		if !seenIDs[eventID] {
			last, known := lastSequence[e.Data.ID]
			if !known || e.Data.Sequence > last { // drop stale events
				lastSequence[e.Data.ID] = e.Data.Sequence
				log.Println(e.Type, e.Data.ID, e.Data.Status)
			}
			seenIDs[eventID] = true
		}
		w.WriteHeader(http.StatusNoContent) // any 2xx within 15 s; anything else is retried
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:9000", nil))
}
