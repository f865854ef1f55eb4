module github.com/blockxfer/blockxfer

go 1.26
