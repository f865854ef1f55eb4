// Package mincore reports which pages of a mapping are in memory, for
// tests that check what a buffer pool prefaulted or what a writer dropped
// from the page cache (mincore(2); Linux only).
package mincore
