using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Patterns.PeerLinks.Wire;

namespace Patterns.PeerLinks.Links;

/// <summary>The gRPC service every node exposes: two bidirectional streams per link, control and bulk.</summary>
internal sealed class LinkService(PeerLinksTransport transport)
{
    public const string ServiceName = "patterns.peerlinks.Link";

    public static readonly Method<FrameBatch, FrameBatch> Control =
        new(MethodType.DuplexStreaming, ServiceName, "Control", FrameBatch.Marshaller, FrameBatch.Marshaller);

    public static readonly Method<FrameBatch, FrameBatch> Bulk =
        new(MethodType.DuplexStreaming, ServiceName, "Bulk", FrameBatch.Marshaller, FrameBatch.Marshaller);

    /// <summary>
    /// The trailer a leaving node ends its peers' calls with (status <see cref="StatusCode.Unavailable"/>): the dialer
    /// marks the node down at once instead of dialling it again for the reconnect grace. A dialer that does not know
    /// it sees a broken link, then a refused connection once the listener has stopped: down too, a moment later.
    /// </summary>
    public const string LeavingTrailer = "patterns-peer-leaving";

    public Task RunControlAsync(IAsyncStreamReader<FrameBatch> requests, IServerStreamWriter<FrameBatch> responses, ServerCallContext context) =>
        UnlessLeavingAsync(RunControlCoreAsync(requests, responses, context));

    public Task RunBulkAsync(IAsyncStreamReader<FrameBatch> requests, IServerStreamWriter<FrameBatch> responses, ServerCallContext context) =>
        UnlessLeavingAsync(RunBulkCoreAsync(requests, context));

    /// <summary>A call that ends (or arrives) while this node leaves ends with the leaving status, whatever ended it.</summary>
    private async Task UnlessLeavingAsync(Task call)
    {
        try
        {
            await call.ConfigureAwait(false);
        }
        catch (Exception) when (transport.HasLeft)
        {
            // Falls through to the leaving status below.
        }

        if (transport.HasLeft)
        {
            throw new RpcException(
                new Status(StatusCode.Unavailable, $"Node {transport.NodeId} is leaving (it stopped)."),
                new Metadata { { LeavingTrailer, transport.NodeId } });
        }
    }

    private async Task RunControlCoreAsync(IAsyncStreamReader<FrameBatch> requests, IServerStreamWriter<FrameBatch> responses, ServerCallContext context)
    {
        var (node, sessionId) = Authenticate(context, "control");
        if (transport.HasLeft)
        {
            return;
        }
        if (!await requests.MoveNext(context.CancellationToken).ConfigureAwait(false))
        {
            return;
        }

        Hello? hello = null;
        var first = requests.Current;
        try
        {
            Frames.Parse(first.Span, (type, body) =>
            {
                if (type != FrameType.Hello || hello is not null)
                {
                    throw new MalformedFrameException($"a {type} frame before the hello");
                }

                hello = Frames.ReadHello(body);
            });
        }
        catch (MalformedFrameException ex)
        {
            PeerLinksLog.Malformed(transport.Logger, "control", node, ex.Message);
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"Malformed frame: {ex.Message}"));
        }
        finally
        {
            first.Return();
        }

        if (hello is null || hello.NodeId != node || hello.Incarnation != sessionId)
        {
            PeerLinksLog.Malformed(transport.Logger, "control", node, "the hello does not match the call's node and session");
            throw new RpcException(new Status(StatusCode.InvalidArgument, "The hello does not match the call's node and session."));
        }

        var session = transport.GetOrCreateSession(node, sessionId, out var resumed);
        await session.RunControlAsync(hello, resumed, requests, responses, context.CancellationToken).ConfigureAwait(false);
    }

    private async Task RunBulkCoreAsync(IAsyncStreamReader<FrameBatch> requests, ServerCallContext context)
    {
        var (node, sessionId) = Authenticate(context, "bulk");
        if (transport.HasLeft)
        {
            return;
        }

        if (!transport.TryGetSession(node, sessionId, out var session))
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, "Open the control stream first."));
        }

        await session.RunBulkAsync(requests, context.CancellationToken).ConfigureAwait(false);
    }

    private (string Node, Guid Session) Authenticate(ServerCallContext context, string stream)
    {
        var identity = transport.Security.Verify(context.RequestHeaders, out var refusal);
        if (identity is null)
        {
            PeerLinksLog.Refused(transport.Logger, stream, context.Peer, refusal!);
            throw new RpcException(new Status(StatusCode.Unauthenticated, refusal!));
        }

        return identity.Value;
    }
}

/// <summary>Binds <see cref="LinkService"/>'s two methods without code generation or reflection.</summary>
internal sealed class LinkServiceMethods : IServiceMethodProvider<LinkService>
{
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<LinkService> context)
    {
        context.AddDuplexStreamingMethod(LinkService.Control, [], static (service, requests, responses, ctx) => service.RunControlAsync(requests, responses, ctx));
        context.AddDuplexStreamingMethod(LinkService.Bulk, [], static (service, requests, responses, ctx) => service.RunBulkAsync(requests, responses, ctx));
    }
}
