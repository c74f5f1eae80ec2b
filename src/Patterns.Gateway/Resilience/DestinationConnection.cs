using System.Net.Sockets;

namespace Patterns.Gateway.Resilience;

/// <summary>
/// A TCP connection to a destination over HTTP/1.x without TLS (the cluster client's connect callback makes every connection,
/// and this one for those, see <see cref="Watches"/>): a plain <see cref="NetworkStream"/> that also tells the client's
/// request body being uploaded over it (<see cref="ClientBodyStream"/>, carried by <see cref="Upload"/> down the send) what
/// the destination did meanwhile. Over HTTP/1.1 the client's handler hands
/// the destination's answer to the request only once the whole request body has gone, so a destination that closes its
/// connection, or answers early (a 413, a 408 of its own timeout) while the upload is stalled or slow, shows only here. It is
/// noted as it arrives, never by a later look at the socket: a destination that answers and then closes a connection whose
/// request body it did not read resets it, and the reset discards the answer still waiting unread on the gateway's socket.
/// Two watchers see it: the handler's own reads (a pooled connection is read ahead while idle, so that read is already waiting
/// when the next request's upload starts), and, when no read is waiting, a peek at the socket started when the upload begins.
/// </summary>
internal sealed class DestinationConnection(Socket socket) : NetworkStream(socket, ownsSocket: true)
{
    /// <summary>
    /// The client's body being uploaded by the send in progress, set by the cluster's handler around the send so that the
    /// connection's writes, made inside it, find it.
    /// </summary>
    public static readonly AsyncLocal<ClientBodyStream?> Upload = new();

    // "HTTP/1.1 413"
    internal const int StatusLineHead = 12;

    private volatile ClientBodyStream? _upload;
    private volatile bool _writing;
    private int _reads;
    private int _peeking;

    /// <summary>The cluster client's connect callback: the connection SocketsHttpHandler makes itself, as this stream.</summary>
    public static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken).ConfigureAwait(false);
            return Watches(context.InitialRequestMessage) ? new DestinationConnection(socket) : new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// True when the connection made for <paramref name="request"/> speaks HTTP/1.x without TLS: the only one watched. Every
    /// write on it is a request's, made in that request's send. A TLS handshake or an HTTP/2 preface is written by the handler
    /// in the flow of the request that caused the connection, which another connection may serve meanwhile: watching it would
    /// link that request's upload to a connection it does not go over, and take this one's close for its own. Over HTTP/2 a
    /// destination's answer and its reset reach the request as they come anyway, and through TLS an early answer is not
    /// readable here: <see cref="TlsDestinationConnection"/> watches such a connection above its TLS stream instead.
    /// </summary>
    internal static bool Watches(HttpRequestMessage request) =>
        request.RequestUri is { Scheme: "http" }
        && (request.Version.Major < 2 || request.VersionPolicy == HttpVersionPolicy.RequestVersionOrLower);

    /// <summary>
    /// Gets a value indicating whether a write of an upload to the destination has not completed: its transport stopped taking
    /// bytes (its TCP window is full: it stopped reading).
    /// </summary>
    public bool WritePending => _writing;

    public override void Write(byte[] buffer, int offset, int count)
    {
        Link();
        base.Write(buffer, offset, count);
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Link();
        base.Write(buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Link();
        return base.WriteAsync(buffer, offset, count, cancellationToken);
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Link();
        var write = base.WriteAsync(buffer, cancellationToken);
        return write.IsCompleted || _upload is not { } upload || !Watching(upload) ? write : Pending(write);
    }

    public override int Read(Span<byte> buffer)
    {
        Interlocked.Increment(ref _reads);
        try
        {
            var read = base.Read(buffer);
            Seen(buffer[..read], buffer.Length);
            return read;
        }
        catch (Exception ex) when (ex is IOException or SocketException)
        {
            Failed();
            throw;
        }
        finally
        {
            Interlocked.Decrement(ref _reads);
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (!Watched)
        {
            // No upload in flight, on this connection or in the send that reads (every request without a body): the read is
            // NetworkStream's own, with no state machine of ours around it. A read the handler starts for an upload (the
            // read-ahead of a pooled connection, taken in the request's own send) is watched; one it started before, outside
            // it (the idle connection's zero-byte read), takes nothing from the socket, so the peek started with the upload,
            // and the real read that follows it, see what the destination sends.
            return base.ReadAsync(buffer, cancellationToken);
        }

        Interlocked.Increment(ref _reads);
        ValueTask<int> read;
        try
        {
            read = base.ReadAsync(buffer, cancellationToken);
        }
        catch
        {
            Interlocked.Decrement(ref _reads);
            throw;
        }

        if (read.IsCompletedSuccessfully)
        {
            Interlocked.Decrement(ref _reads);
            var count = read.Result;
            Seen(buffer.Span[..count], buffer.Length);
            return read;
        }

        return Awaited(read, buffer);
    }

    private async ValueTask<int> Awaited(ValueTask<int> read, Memory<byte> buffer)
    {
        int count;
        try
        {
            count = await read.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or SocketException)
        {
            Interlocked.Decrement(ref _reads);
            Failed();
            throw;
        }
        catch
        {
            Interlocked.Decrement(ref _reads);
            throw;
        }

        Interlocked.Decrement(ref _reads);
        Seen(buffer.Span[..count], buffer.Length);
        return count;
    }

    private async ValueTask Pending(ValueTask write)
    {
        _writing = true;
        try
        {
            await write.ConfigureAwait(false);
        }
        finally
        {
            _writing = false;
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && _upload is { } upload)
        {
            _upload = null;
            if (Watching(upload))
            {
                try
                {
                    // Readable with nothing waiting: the destination ended its side (an answer would have been seen as it came).
                    if (Socket.Available == 0 && Socket.Poll(0, SelectMode.SelectRead))
                    {
                        upload.DestinationClosed();
                    }
                }
                catch (SocketException)
                {
                    upload.DestinationClosed();
                }
                catch (ObjectDisposedException)
                {
                    // Closed already: nothing to tell.
                }
            }
        }

        base.Dispose(disposing);
    }

    /// <summary>A write of the send in progress: links its upload to this connection, and watches it when nothing reads.</summary>
    private void Link()
    {
        if (Upload.Value is not { } upload || ReferenceEquals(_upload, upload))
        {
            return;
        }

        _upload = upload;
        upload.Linked(this);
        if (Volatile.Read(ref _reads) == 0 && Interlocked.Exchange(ref _peeking, 1) == 0)
        {
            _ = PeekAsync();
        }
    }

    /// <summary>Waits, without taking them, for the destination's first bytes or its end of the connection.</summary>
    private async Task PeekAsync()
    {
        var head = new byte[StatusLineHead];
        try
        {
            var read = await Socket.ReceiveAsync(head, SocketFlags.Peek).ConfigureAwait(false);
            Seen(head.AsSpan(0, read), head.Length);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Reset by the destination, or disposed by the handler (an upload that ended on the gateway's side is judged by then).
            if (ex is SocketException)
            {
                Failed();
            }
        }
        finally
        {
            Volatile.Write(ref _peeking, 0);
        }
    }

    /// <summary>
    /// Gets a value indicating whether a read now can see what the destination does during an upload: the send in progress
    /// carries one still being read (<see cref="Upload"/>), or one goes over this connection now.
    /// </summary>
    private bool Watched =>
        Upload.Value is { Uploading: true, Failed: false } || (_upload is { } upload && Watching(upload));

    /// <summary>True when <paramref name="upload"/> is still being sent over this connection.</summary>
    private bool Watching(ClientBodyStream upload) => upload.Uploading && upload.IsOver(this);

    /// <summary>Bytes from the destination (<paramref name="bytes"/>, empty at its end of the connection) while the upload is in progress.</summary>
    private void Seen(ReadOnlySpan<byte> bytes, int room)
    {
        if (_upload is not { } upload || !Watching(upload))
        {
            return;
        }

        if (bytes.IsEmpty)
        {
            // A zero-byte read (only waiting for data) says nothing; an empty read into room is the destination's end.
            if (room > 0)
            {
                upload.DestinationClosed();
            }
        }
        else
        {
            upload.DestinationAnswered(Status(bytes));
        }
    }

    /// <summary>A read failed while the upload was in progress: the destination reset the connection.</summary>
    private void Failed()
    {
        if (_upload is { } upload && Watching(upload))
        {
            upload.DestinationClosed();
        }
    }

    /// <summary>The status of an HTTP/1.x answer that <paramref name="head"/> starts, or 0 when it is not one (HTTP/2 frames, TLS records).</summary>
    internal static int Status(ReadOnlySpan<byte> head)
    {
        if (head.Length < StatusLineHead || !head[..7].SequenceEqual("HTTP/1."u8) || head[8] != (byte)' ')
        {
            return 0;
        }

        var status = 0;
        foreach (var digit in head[9..StatusLineHead])
        {
            if (digit is < (byte)'0' or > (byte)'9')
            {
                return 0;
            }

            status = (status * 10) + (digit - '0');
        }

        return status;
    }
}
