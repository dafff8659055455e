module github.com/geniam/geniam

go 1.26.8

// GENI authorities (gcf among them) have issued certificates with negative
// serial numbers, which Go refuses to parse unless told otherwise.
godebug x509negativeserial=1

require (
	github.com/jackc/pgx/v5 v5.12.0
	github.com/kolo/xmlrpc v0.0.0-20220921171641-a4b6fa1dd06b
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	golang.org/x/text v0.41.0 // indirect
)
