package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3Options configure an S3-compatible store.
type S3Options struct {
	// Bucket holds the blobs; it must exist.
	Bucket string `yaml:"bucket" json:"bucket"`
	// Prefix is prepended to every blob id to form the object key.
	Prefix string `yaml:"prefix,omitempty" json:"prefix,omitempty"`
	// Region is the bucket's region ("us-east-1" when empty).
	Region string `yaml:"region,omitempty" json:"region,omitempty"`
	// Endpoint is the service URL for S3-compatible servers; empty means
	// AWS.
	Endpoint string `yaml:"endpoint,omitempty" json:"endpoint,omitempty"`
	// PathStyle addresses buckets as <endpoint>/<bucket> instead of
	// <bucket>.<endpoint>; most S3-compatible servers need it.
	PathStyle       bool   `yaml:"path_style,omitempty" json:"path_style,omitempty"`
	AccessKeyID     string `yaml:"access_key_id" json:"access_key_id"`
	SecretAccessKey string `yaml:"secret_access_key" json:"secret_access_key"`
	// HTTPClient overrides the SDK's HTTP client (tests, custom CAs).
	HTTPClient *http.Client `yaml:"-" json:"-"`
	// TempDir is where uploads are spooled before sending (the body must
	// be seekable for signing); empty means os.TempDir().
	TempDir string `yaml:"temp_dir,omitempty" json:"temp_dir,omitempty"`
}

// S3 is a Store in an S3-compatible bucket; blob <id> is the object
// <prefix><id>.
type S3 struct {
	client  *s3.Client
	bucket  string
	prefix  string
	tempDir string
}

var _ Store = (*S3)(nil)

// NewS3 returns a store using static credentials from opts.
func NewS3(opts S3Options) (*S3, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3 blobstore: bucket is empty")
	}
	region := opts.Region
	if region == "" {
		region = "us-east-1"
	}
	cfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(opts.AccessKeyID, opts.SecretAccessKey, ""),
	}
	if opts.HTTPClient != nil {
		cfg.HTTPClient = opts.HTTPClient
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		// Only checksum when the operation requires it: S3-compatible
		// servers vary in their support of the newer checksum headers.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &S3{client: client, bucket: opts.Bucket, prefix: opts.Prefix, tempDir: opts.TempDir}, nil
}

func (s *S3) key(id string) *string { return aws.String(s.prefix + id) }

// Put implements Store.
func (s *S3) Put(ctx context.Context, r io.Reader) (Blob, error) {
	f, b, err := spoolFile(ctx, s.tempDir, r)
	if err != nil {
		return Blob{}, fmt.Errorf("put blob: %w", err)
	}
	defer cleanup(f)
	b.ID = b.SHA256
	if ok, err := s.Exists(ctx, b.ID); err == nil && ok {
		return b, nil // same id, same content
	}
	if err := s.upload(ctx, b.ID, f, b); err != nil {
		return Blob{}, err
	}
	return b, nil
}

// PutID implements Store.
func (s *S3) PutID(ctx context.Context, id string, r io.Reader, sum string) (Blob, error) {
	if !ValidID(id) {
		return Blob{}, fmt.Errorf("put blob %q: %w", id, ErrInvalidID)
	}
	f, b, err := spoolFile(ctx, s.tempDir, r)
	if err != nil {
		return Blob{}, fmt.Errorf("put blob %s: %w", id, err)
	}
	defer cleanup(f)
	if sum != "" && sum != b.SHA256 {
		return Blob{}, fmt.Errorf("put blob %s: got sha256 %s, want %s: %w", id, b.SHA256, sum, ErrDigestMismatch)
	}
	b.ID = id
	if err := s.upload(ctx, id, f, b); err != nil {
		return Blob{}, err
	}
	return b, nil
}

func (s *S3) upload(ctx context.Context, id string, f *os.File, b Blob) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           s.key(id),
		Body:          f,
		ContentLength: aws.Int64(b.Size),
		ContentType:   aws.String("application/octet-stream"),
		Metadata:      map[string]string{"sha256": b.SHA256},
	})
	if err != nil {
		return fmt.Errorf("put blob %s to bucket %s: %w", id, s.bucket, err)
	}
	return nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, id string) (io.ReadCloser, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("get blob %q: %w", id, ErrInvalidID)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: s.key(id)})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("get blob %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("get blob %s from bucket %s: %w", id, s.bucket, err)
	}
	return out.Body, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("delete blob %q: %w", id, ErrInvalidID)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: s.key(id)})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete blob %s from bucket %s: %w", id, s.bucket, err)
	}
	return nil
}

// List implements Store: the objects under the prefix.
func (s *S3) List(ctx context.Context, fn func(Info) error) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, o := range page.Contents {
			id := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if !ValidID(id) {
				continue
			}
			if err := fn(Info{ID: id, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Exists implements Store.
func (s *S3) Exists(ctx context.Context, id string) (bool, error) {
	if !ValidID(id) {
		return false, fmt.Errorf("blob %q: %w", id, ErrInvalidID)
	}
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: s.key(id)})
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("blob %s in bucket %s: %w", id, s.bucket, err)
	}
	return true, nil
}

func isNotFound(err error) bool {
	var nf *types.NotFound
	var nsk *types.NoSuchKey
	if errors.As(err, &nf) || errors.As(err, &nsk) {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NotFound", "NoSuchKey", "404":
			return true
		}
	}
	return false
}
