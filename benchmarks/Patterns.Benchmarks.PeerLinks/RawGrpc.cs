using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Patterns.Benchmarks.PeerLinks;

/// <summary>
/// The floor: one gRPC bidirectional stream on HTTP/2, one 100-byte message per write, a server that counts
/// what it reads and answers with the count when asked (an empty message). What gRPC gives without batching.
/// </summary>
internal sealed class RawGrpcPeer : IAsyncDisposable
{
    private static readonly Marshaller<byte[]> Bytes = Marshallers.Create(static b => b, static b => b);
    private static readonly Method<byte[], byte[]> Stream = new(MethodType.DuplexStreaming, "bench.Raw", "Stream", Bytes, Bytes);
    private static readonly Method<byte[], byte[]> Echo = new(MethodType.Unary, "bench.Raw", "Echo", Bytes, Bytes);
    private WebApplication? _app;
    private GrpcChannel? _channel;

    public CallInvoker Invoker => _channel!.CreateCallInvoker();

    /// <summary>Starts the server and a channel to it; with <paramref name="certificate"/>, over mutual TLS (both ends present it and accept only it).</summary>
    public static async Task<RawGrpcPeer> StartAsync(X509Certificate2? certificate = null)
    {
        var raw = new RawGrpcPeer();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l =>
        {
            l.Protocols = HttpProtocols.Http2;
            if (certificate is not null)
            {
                l.UseHttps(https =>
                {
                    https.ServerCertificate = certificate;
                    https.ClientCertificateMode = ClientCertificateMode.RequireCertificate;
                    https.ClientCertificateValidation = (c, _, _) => c.Thumbprint == certificate.Thumbprint;
                });
            }
        }));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton<IServiceMethodProvider<Service>, Methods>();
        raw._app = builder.Build();
        raw._app.MapGrpcService<Service>();
        await raw._app.StartAsync();
        var address = raw._app.Urls.First();
        if (certificate is null)
        {
            raw._channel = GrpcChannel.ForAddress(address);
        }
        else
        {
            var handler = new SocketsHttpHandler
            {
                SslOptions = new SslClientAuthenticationOptions
                {
                    ClientCertificates = [certificate],
                    RemoteCertificateValidationCallback = (_, c, _, _) => c is not null && c.GetCertHashString() == certificate.Thumbprint,
                },
            };
            raw._channel = GrpcChannel.ForAddress(address.Replace("http://", "https://", StringComparison.Ordinal), new GrpcChannelOptions { HttpHandler = handler });
        }

        return raw;
    }

    /// <summary>Streams <paramref name="count"/> messages on one call and waits until the server has read them all.</summary>
    public async Task StreamAsync(byte[] payload, int count)
    {
        using var call = Invoker.AsyncDuplexStreamingCall(Stream, null, default);
        for (var i = 0; i < count; i++)
        {
            await call.RequestStream.WriteAsync(payload);
        }

        await call.RequestStream.CompleteAsync();
        await call.ResponseStream.MoveNext(CancellationToken.None);
    }

    public Task<byte[]> EchoAsync(byte[] payload) => Invoker.AsyncUnaryCall(Echo, null, default, payload).ResponseAsync;

    public async ValueTask DisposeAsync()
    {
        _channel?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }

    private sealed class Service
    {
        public async Task Run(IAsyncStreamReader<byte[]> requests, IServerStreamWriter<byte[]> responses, ServerCallContext context)
        {
            var count = 0;
            while (await requests.MoveNext(context.CancellationToken))
            {
                count++;
            }

            await responses.WriteAsync(BitConverter.GetBytes(count));
        }
    }

    private sealed class Methods : IServiceMethodProvider<Service>
    {
        public void OnServiceMethodDiscovery(ServiceMethodProviderContext<Service> context)
        {
            context.AddDuplexStreamingMethod(Stream, [], static (s, r, w, c) => s.Run(r, w, c));
            context.AddUnaryMethod(Echo, [], static (s, r, c) => Task.FromResult(r));
        }
    }
}
