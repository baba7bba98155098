module github.com/chorus-sync/chorus

go 1.26
