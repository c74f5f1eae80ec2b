using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.RequestResponse;
using Patterns.Serialization;
using Patterns.Storage;
using Patterns.Transport;

namespace Patterns.Core.Tests.RequestResponse;

/// <summary>
/// With de-duplication, a request handler's store session claims the request in its commit; of two copies handled at once
/// in two processes, the second one's commit fails as a duplicate. That copy must not answer the caller with an error:
/// the first copy answers.
/// </summary>
public sealed class RequestResponderDuplicateTests
{
    [Fact]
    public async Task Request_WhoseCommitFindsItClaimedByAnotherCopy_IsSettledWithoutAReply()
    {
        var transport = new RecordingTransport();
        var responder = Responder(transport, (envelope, _) => throw new DuplicateMessageException("quotes", envelope.MessageId.ToString()));
        var request = Request();

        var settlement = await responder(request, TestContext.Current.CancellationToken);

        settlement.Kind.Should().Be(SettlementKind.Ack);
        transport.Sent.Should().BeEmpty("the copy that committed first answers; an error reply from this one could reach the caller first");
    }

    [Fact]
    public async Task Request_WhoseCommitFindsAnotherMessageClaimed_StillAnswersWithTheError()
    {
        var transport = new RecordingTransport();
        var responder = Responder(transport, (_, _) => throw new DuplicateMessageException("payments", Guid.NewGuid().ToString()));

        var settlement = await responder(Request(), TestContext.Current.CancellationToken);

        settlement.Kind.Should().Be(SettlementKind.Ack);
        transport.Sent.Should().ContainSingle().Which.Envelope.Headers.Should().ContainKey(EnvelopeHeaders.ResponseError);
    }

    private static Envelope Request() => new()
    {
        MessageId = Guid.NewGuid(),
        ReplyTo = "replies",
        Body = new Ask("ACME"),
    };

    private static DeliveryHandler Responder(RecordingTransport transport, Func<Envelope, CancellationToken, ValueTask<Answer>> handler)
    {
        var current = default(Envelope);
        var entry = new DelegateRequestHandlerEntry<Ask, Answer>((_, ct) => handler(current, ct), "quotes", pipeline: null);
        entry.Configure(EmptyProvider.Instance, "quotes", []);
        var bus = new MessageBus(transport, new MessageTypeRegistry(), new FakeTimeProvider(), NullLoggerFactory.Instance);
        var respond = entry.CreateResponder(bus, new JsonMessageSerializer(), NullLogger.Instance);
        return (envelope, ct) =>
        {
            current = envelope;
            return respond(envelope, ct);
        };
    }

    private sealed record Ask(string Symbol);

    private sealed record Answer(decimal Price);

    private sealed class EmptyProvider : IServiceProvider
    {
        public static readonly EmptyProvider Instance = new();

        public object? GetService(Type serviceType) => null;
    }

    /// <summary>Records what is sent; nothing else is used.</summary>
    private sealed class RecordingTransport : MessageTransport
    {
        public ConcurrentQueue<(string Queue, Envelope Envelope)> Sent { get; } = new();

        public override string SystemName => "recording";

        public override bool IsInProcess => true;

        public override int MaxPayloadBytes => int.MaxValue;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) => default;

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default)
        {
            Sent.Enqueue((queue, envelope));
            return default;
        }

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public override ValueTask DisposeAsync() => default;
    }
}
