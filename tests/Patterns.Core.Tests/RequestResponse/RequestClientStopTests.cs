using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.RequestResponse;
using Patterns.Transport;

namespace Patterns.Core.Tests.RequestResponse;

/// <summary>What a host's stop and the client's disposal do to a request sent over the transport that is still waiting for its response.</summary>
public sealed class RequestClientStopTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task HostStops_TheReplyQueueGoes_ThenDisposingFailsTheCallStillWaiting(bool disposeAsync)
    {
        var host = await TestHost.StartAsync(b => b.AddRequestResponse(r => r.Configure(o => o.PreferInProcessDispatch = false)));
        var bus = host.Services.GetRequiredService<MessageBus>();
        var requestQueue = host.Services.GetRequiredService<IOptions<RequestResponseOptions>>().Value.RequestQueuePrefix
            + bus.Registry.GetName(typeof(GetQuote));
        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);

        // Stands in for a handler in another process that takes the request and has not answered yet.
        var remote = await bus.Transport.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(requestQueue), ConsumerGroup = requestQueue },
            (envelope, _) =>
            {
                received.TrySetResult(envelope);
                return new(Settlement.Ack);
            });
        var client = host.Services.GetRequiredService<IRequestClient>();
        var call = client.SendAsync<GetQuote, Quote>(new GetQuote("A"), Timeout.InfiniteTimeSpan).AsTask();
        var request = await received.Task.WaitAsync(TestHost.Wait);

        await host.StopAsync();

        // The reply queue stopped with the host: a response sent now has nowhere to go.
        var late = async () => await bus.Transport.SendAsync(
            request.ReplyTo!,
            new Envelope { MessageId = Guid.NewGuid(), CorrelationId = request.MessageId, MessageType = "quote", Body = new Quote("A", 1m) });
        await late.Should().ThrowAsync<QueueNotFoundException>("the client's reply queue stops when the host stops");
        call.IsCompleted.Should().BeFalse("a stopped host leaves the call to its timeout or to the client's disposal");

        if (disposeAsync)
        {
            // As the host's services are disposed (the host disposes them asynchronously).
            await ((IAsyncDisposable)host).DisposeAsync();
        }
        else
        {
            // As a service provider disposed synchronously disposes it.
            ((IDisposable)client).Dispose();
        }

        var waited = async () => await call.WaitAsync(TestHost.Wait);
        (await waited.Should().ThrowAsync<ObjectDisposedException>()).Which.Message.Should().Contain("stopped before the response arrived");
        await remote.DisposeAsync();
        await ((IAsyncDisposable)host).DisposeAsync();
    }
}
