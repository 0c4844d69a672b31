// Package controller will feed proxy.Build from client-go informers (or a
// manifest directory) and drive a proxy.Backend. Not implemented yet: see
// issue "Controller and daemon".
package controller
