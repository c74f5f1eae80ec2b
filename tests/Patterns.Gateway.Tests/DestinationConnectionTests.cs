using System.Net;
using System.Net.Sockets;
using Patterns.Gateway.Resilience;

namespace Patterns.Gateway.Tests;

/// <summary>The gateway's connection to a destination on its own, over a loopback socket pair.</summary>
public sealed class DestinationConnectionTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task AWaitingRead_WithNoUploadInFlight_IsTheSocketsOwn_AllocatingNothing()
    {
        // Every request without a body (the gateway's common case) reads its answer through this connection: that read must
        // cost what NetworkStream's does, with no state machine of the connection's around it while it waits.
        var (connection, destination) = await PairAsync();
        using var peer = destination;
        await using var stream = connection;
        var buffer = new byte[16];
        for (var i = 0; i < 3; i++)
        {
            // Warm the socket's cached receive state (first use, and the read that completes later) as every pooled connection has.
            var warm = stream.ReadAsync(buffer);
            await peer.SendAsync("x"u8.ToArray(), SocketFlags.None, Ct);
            (await warm).Should().Be(1);
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        var read = stream.ReadAsync(buffer);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        var waited = !read.IsCompleted;

        await peer.SendAsync("y"u8.ToArray(), SocketFlags.None, Ct);
        (await read).Should().Be(1);
        waited.Should().BeTrue("nothing had been sent when the read started");
        allocated.Should().Be(0, "no upload is in flight, so the read is NetworkStream's own");
    }

    [Fact]
    public async Task AReadStartedInAnUploadsSend_BeforeItsFirstWrite_SeesTheDestinationsEarlyAnswer()
    {
        // The read-ahead of a pooled connection is started by the upload's own send before the request's headers are written:
        // it must still be watched, so that an answer arriving while the body is coming is noted.
        var (connection, destination) = await PairAsync();
        using var peer = destination;
        await using var stream = connection;
        var body = new ClientBodyStream(new MemoryStream(new byte[10]));
        DestinationConnection.Upload.Value = body;
        try
        {
            var buffer = new byte[64];
            var read = stream.ReadAsync(buffer);
            await stream.WriteAsync("POST / HTTP/1.1\r\n"u8.ToArray(), Ct);
            body.Connection.Should().BeSameAs(stream, "the upload's first write links it to the connection");

            await peer.SendAsync("HTTP/1.1 413 Payload Too Large\r\n\r\n"u8.ToArray(), SocketFlags.None, Ct);
            (await read).Should().BeGreaterThan(0);
            body.DestinationAnswer.Should().Be(413);
        }
        finally
        {
            DestinationConnection.Upload.Value = null;
        }
    }

    /// <summary>
    /// Only HTTP/1.x without TLS is watched: a TLS handshake or an HTTP/2 preface is written in the flow of the request that
    /// caused the connection (its upload in <see cref="DestinationConnection.Upload"/>), which another connection may serve.
    /// </summary>
    [Theory]
    [InlineData("http", "1.1", HttpVersionPolicy.RequestVersionOrLower, true)]
    [InlineData("http", "2.0", HttpVersionPolicy.RequestVersionOrLower, true)]
    [InlineData("http", "2.0", HttpVersionPolicy.RequestVersionExact, false)]
    [InlineData("https", "1.1", HttpVersionPolicy.RequestVersionOrLower, false)]
    [InlineData("https", "2.0", HttpVersionPolicy.RequestVersionOrLower, false)]
    public async Task TheConnectCallback_WatchesPlainHttp11Connections_Only(string scheme, string version, HttpVersionPolicy policy, bool watched)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var made = new TaskCompletionSource<Stream>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, ct) =>
            {
                var connection = await DestinationConnection.ConnectAsync(context, ct);
                made.TrySetResult(connection);

                // What the client does with it next (a request, a handshake, a preface) is not the point: stop there.
                await connection.DisposeAsync();
                throw new HttpRequestException("stop");
            },
        };
        using var client = new HttpMessageInvoker(handler);
        using var request = new HttpRequestMessage(HttpMethod.Get, $"{scheme}://127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port}/")
        {
            Version = Version.Parse(version),
            VersionPolicy = policy,
        };

        await FluentActions.Awaiting(() => client.SendAsync(request, Ct)).Should().ThrowAsync<HttpRequestException>();

        var stream = await made.Task.WaitAsync(Ct);
        (stream is DestinationConnection).Should().Be(watched, "only a connection that speaks HTTP/1.x without TLS is watched");
        stream.Should().BeAssignableTo<NetworkStream>();
    }

    private static async Task<(DestinationConnection Connection, Socket Destination)> PairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await client.ConnectAsync(listener.LocalEndPoint!, Ct);
        var accepted = await listener.AcceptAsync(Ct);
        return (new DestinationConnection(client), accepted);
    }
}
