// Package servertest runs Chorus clusters in-process for tests: N nodes
// (server.New + Run, each on 127.0.0.1:0) that share one fresh PostgreSQL
// database and one NATS server, and that a test can stop one by one.
//
// Each cluster gets its own database chorus_st_<random>, created on the
// test server ($CHORUS_TEST_POSTGRES, default
// postgres://postgres@127.0.0.1:5432/test) and dropped when the test ends,
// and its own NATS subject prefix on $CHORUS_TEST_NATS (default
// nats://127.0.0.1:4222), so clusters of concurrent tests never see each
// other. Every node runs with the same credentials, as a real deployment
// must. The bus of each node is built here (nats.Open with WithPrefix,
// plus any per-node options such as WithFaults) and handed to the server
// as Config.Bus; the store is opened by the server from Config.StoreURL, so
// that the cluster leader election (background work on one node) is the
// production one.
//
// Missing services fail the test with instructions; nothing is skipped.
//
// Concurrency: a Cluster's methods, except StartNode, and a Node's methods
// are safe for concurrent use. StartNode must not run concurrently with
// itself or with reads of Cluster.Nodes.
package servertest
