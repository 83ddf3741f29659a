module appswitch.test/compatgo

go 1.19
