using System.Net;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Push;
using Patterns.PubSub;

namespace Patterns.Gateway.Tests;

public sealed class PushTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Task<KestrelHost> StartAsync(Action<WebApplication> endpoints, TimeProvider? time = null, GatewayLogs? logs = null) =>
        KestrelHost.StartAsync(
            b =>
            {
                if (time is not null)
                {
                    b.Services.AddSingleton(time);
                }

                if (logs is not null)
                {
                    b.Logging.AddProvider(logs);
                }

                b.AddPatterns(p => p.UseInMemory());
                b.AddPubSub();
                b.AddGateway(g => g.ConfigurePush(o => o.ReplayCount = 16));
            },
            app =>
            {
                app.UseWebSockets();
                endpoints(app);
            });

    private static ValueTask Publish(KestrelHost host, string topic, string text) =>
        host.Services.GetRequiredService<IPublisher>().PublishAsync(topic, new Ping(text), Ct);

    [Fact]
    public async Task ServerSentEvents_DeliversInOrder_ThenResumesByLastEventId()
    {
        await using var host = await StartAsync(app => app.MapServerSentEvents("/sse/news", "news"));

        using (var stream = await SseStream.OpenAsync(host.Client, "/sse/news", null))
        {
            for (var i = 1; i <= 3; i++)
            {
                await Publish(host, "news", $"n{i}");
            }

            var events = await stream.ReadAsync(3);
            events.Select(e => e.Id).Should().Equal(1, 2, 3);
            events.Select(e => e.Event).Should().AllBe("news");
            events.Select(e => JsonDocument.Parse(e.Data).RootElement.GetProperty("text").GetString()).Should().Equal("n1", "n2", "n3");
        }

        await Publish(host, "news", "n4");
        await Publish(host, "news", "n5");
        Waits.Until(() => Feed(host, "news").LastId == 5, "the feed has five messages");

        using var resumed = await SseStream.OpenAsync(host.Client, "/sse/news", lastEventId: 3);
        var missed = await resumed.ReadAsync(2);
        missed.Select(e => e.Id).Should().Equal(4, 5);
    }

    [Fact]
    public async Task ServerSentEvents_SlowClientDropOldest_KeepsNewestAndStaysConnected()
    {
        await using var host = await StartAsync(app => app.MapServerSentEvents("/sse/big", "big", o =>
        {
            o.BufferCapacity = 8;
            o.SlowClient = SlowClientPolicy.DropOldest;
        }));
        using var stream = await SseStream.OpenAsync(host.Client, "/sse/big", null);
        var large = new string('x', 64 * 1024);

        // The client reads nothing while 400 messages of 64 KB (25 MB, more than the socket buffers hold) arrive.
        for (var i = 0; i < 400; i++)
        {
            await Publish(host, "big", large);
        }

        Waits.Until(() => Feed(host, "big").LastId == 400, "the feed has every message");
        var ids = new List<long>();
        while (ids.Count == 0 || ids[^1] < 400)
        {
            ids.Add((await stream.ReadAsync(1))[0].Id);
        }

        ids.Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
        ids.Count.Should().BeLessThan(400, "the slow client's buffer dropped the oldest messages");
        ids[^1].Should().Be(400);
        Hub(host).Connections.Should().Be(1);
    }

    [Fact]
    public async Task ServerSentEvents_SlowClientDisconnect_IsCutOff()
    {
        await using var host = await StartAsync(app => app.MapServerSentEvents("/sse/big", "big", o =>
        {
            o.BufferCapacity = 8;
            o.SlowClient = SlowClientPolicy.Disconnect;
        }));
        using var stream = await SseStream.OpenAsync(host.Client, "/sse/big", null);
        var large = new string('x', 64 * 1024);

        for (var i = 0; i < 400; i++)
        {
            await Publish(host, "big", large);
        }

        Waits.Until(() => Hub(host).Connections == 0, "the slow client is disconnected");
        var received = await stream.ReadToEndAsync();
        received.Should().BeLessThan(400);
        Feed(host, "big").ConnectionCount.Should().Be(0);
    }

    [Fact]
    public async Task ServerSentEvents_IdleConnection_GetsAKeepAliveCommentEveryInterval()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(app => app.MapServerSentEvents("/sse/quiet", "quiet", o => o.KeepAliveInterval = TimeSpan.FromSeconds(10)), time);
        using var stream = await SseStream.OpenAsync(host.Client, "/sse/quiet", null);

        time.Advance(TimeSpan.FromSeconds(10));
        (await stream.ReadLineAsync()).Should().Be(": keep-alive");
        (await stream.ReadLineAsync()).Should().BeEmpty();

        time.Advance(TimeSpan.FromSeconds(10));
        (await stream.ReadLineAsync()).Should().Be(": keep-alive", "an idle connection gets one every interval");
        (await stream.ReadLineAsync()).Should().BeEmpty();

        await Publish(host, "quiet", "after the keep-alives");
        var events = await stream.ReadAsync(1);
        events.Single().Id.Should().Be(1);
        JsonDocument.Parse(events.Single().Data).RootElement.GetProperty("text").GetString().Should().Be("after the keep-alives");
    }

    [Fact]
    public async Task ServerSentEvents_StalledClient_IsDroppedWhileOthersKeepReceiving()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(
            app =>
            {
                app.MapServerSentEvents("/sse/big", "big", o =>
                {
                    o.BufferCapacity = 8;
                    o.KeepAliveInterval = TimeSpan.FromSeconds(10);
                });

                // The healthy client's endpoint has no stall detection, so that a busy test machine cannot make its reads look stalled.
                app.MapServerSentEvents("/sse/big-steady", "big", o =>
                {
                    o.BufferCapacity = 8;
                    o.KeepAliveInterval = null;
                });
            },
            time);
        using var stalled = await SseStream.OpenAsync(host.Client, "/sse/big", null);
        using var healthy = await SseStream.OpenAsync(host.Client, "/sse/big-steady", null);
        var large = new string('x', 64 * 1024);

        // The healthy client reads all the time, until the last message; the stalled one reads nothing.
        var reading = Task.Run(async () =>
        {
            while (true)
            {
                var e = (await healthy.ReadAsync(1))[0];
                if (e.Data.Contains("\"last\"", StringComparison.Ordinal))
                {
                    return e.Id;
                }
            }
        });

        // 3 MB at a time until the stalled client's socket buffers are full and its write makes no progress for a whole
        // interval: it is then cut off (bounded: at most 40 rounds, 128 MB).
        for (var round = 0; round < 40 && Hub(host).Connections == 2; round++)
        {
            for (var i = 0; i < 50; i++)
            {
                await Publish(host, "big", large);
            }

            time.Advance(TimeSpan.FromSeconds(10));
            for (var i = 0; i < 20 && Hub(host).Connections == 2; i++)
            {
                await Task.Delay(5, Ct);
            }
        }

        Waits.Until(() => Hub(host).Connections == 1, "the stalled client is disconnected");
        Feed(host, "big").ConnectionCount.Should().Be(1);
        reading.IsCompleted.Should().BeFalse("the healthy client is still connected and reading");

        await Publish(host, "big", "last");
        var lastId = await reading.WaitAsync(Waits.Bound, Ct);
        lastId.Should().Be(Feed(host, "big").LastId);
        Hub(host).Connections.Should().Be(1);
        var afterDrop = await stalled.ReadToEndAsync();
        afterDrop.Should().BeGreaterThan(0).And.BeLessThan((int)lastId, "the stalled client's stream ended when it was cut off");
    }

    [Fact]
    public async Task WebSocket_MultiplexesTopicsWithSubscribeAndUnsubscribe()
    {
        await using var host = await StartAsync(app => app.MapWebSocketTopics("/ws", ["prices", "news"]));
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri(host.Address.Replace("http://", "ws://", StringComparison.Ordinal) + "/ws"), Ct);

        await SendFrame(socket, "{\"type\":\"subscribe\",\"topic\":\"prices\"}");
        (await ReceiveFrame(socket)).Should().Be("{\"type\":\"subscribed\",\"topic\":\"prices\"}");
        await SendFrame(socket, "{\"type\":\"subscribe\",\"topic\":\"news\"}");
        (await ReceiveFrame(socket)).Should().Be("{\"type\":\"subscribed\",\"topic\":\"news\"}");
        await SendFrame(socket, "{\"type\":\"subscribe\",\"topic\":\"secrets\"}");
        (await ReceiveFrame(socket)).Should().Be("{\"type\":\"error\",\"topic\":\"secrets\",\"message\":\"The topic \\u0027secrets\\u0027 is not exposed on this endpoint.\"}");
        await SendFrame(socket, "not json");
        (await ReceiveFrame(socket)).Should().StartWith("{\"type\":\"error\",\"message\":\"The frame is not JSON");

        await Publish(host, "prices", "p1");
        (await ReceiveFrame(socket)).Should().Be("{\"type\":\"message\",\"topic\":\"prices\",\"id\":1,\"data\":{\"text\":\"p1\"}}");
        await Publish(host, "news", "n1");
        (await ReceiveFrame(socket)).Should().Be("{\"type\":\"message\",\"topic\":\"news\",\"id\":1,\"data\":{\"text\":\"n1\"}}");

        await SendFrame(socket, "{\"type\":\"unsubscribe\",\"topic\":\"news\"}");
        (await ReceiveFrame(socket)).Should().Be("{\"type\":\"unsubscribed\",\"topic\":\"news\"}");
        await Publish(host, "news", "n2");
        await Publish(host, "prices", "p2");
        (await ReceiveFrame(socket)).Should().Be("{\"type\":\"message\",\"topic\":\"prices\",\"id\":2,\"data\":{\"text\":\"p2\"}}");

        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, Ct);
        Waits.Until(() => Hub(host).Connections == 0, "the socket's connection is released");
    }

    [Fact]
    public async Task WebSocket_ClientThatStopsAnsweringPings_IsDroppedWhileAnsweringClientKeepsReceiving()
    {
        var logs = new GatewayLogs();
        await using var host = await StartAsync(
            app => app.MapWebSocketTopics("/ws", ["news"], o =>
            {
                // Real time: long enough that a client with a receive pending answers in time on a busy machine.
                o.KeepAliveInterval = TimeSpan.FromMilliseconds(200);
                o.KeepAliveTimeout = TimeSpan.FromSeconds(5);
            }),
            logs: logs);
        var uri = new Uri(host.Address.Replace("http://", "ws://", StringComparison.Ordinal) + "/ws");

        // Neither client sends frames of its own; a client answers the server's pings only while it has a receive pending.
        // The live client keeps one pending from its subscription on (also while the silent client connects), so only the
        // silent one can miss a ping.
        using var live = new ClientWebSocket();
        live.Options.KeepAliveInterval = TimeSpan.Zero;
        using var silent = new ClientWebSocket();
        silent.Options.KeepAliveInterval = TimeSpan.Zero;
        Task<string> next = null!;
        foreach (var socket in new[] { live, silent })
        {
            await socket.ConnectAsync(uri, Ct);
            await SendFrame(socket, "{\"type\":\"subscribe\",\"topic\":\"news\"}");
            (await ReceiveFrame(socket)).Should().Be("{\"type\":\"subscribed\",\"topic\":\"news\"}");
            if (socket == live)
            {
                next = ReceiveFrame(live, Waits.Bound);
            }
        }

        Hub(host).Connections.Should().Be(2);

        // The silent client stops reading, so the server's ping goes unanswered and the server drops it.
        var dropped = await logs.WaitForAsync(1313);
        dropped.Should().Be("A WebSocket client of '/ws' did not answer a keep-alive ping within 00:00:05 and was disconnected (1 topic subscriptions released).");
        Waits.Until(() => Hub(host).Connections == 1, "the silent client's connection slot is released");
        Feed(host, "news").ConnectionCount.Should().Be(1);

        // The live client answered every ping for the whole time and still receives.
        await Publish(host, "news", "n1");
        (await next).Should().Be("{\"type\":\"message\",\"topic\":\"news\",\"id\":1,\"data\":{\"text\":\"n1\"}}");
        logs.Of(1313).Should().HaveCount(1);

        // The silent client finds its connection gone once it reads again.
        var read = () => silent.ReceiveAsync(new byte[1024], Ct);
        await read.Should().ThrowAsync<WebSocketException>();
        await live.CloseAsync(WebSocketCloseStatus.NormalClosure, null, Ct);
        Waits.Until(() => Hub(host).Connections == 0, "the live client's connection is released on close");
    }

    [Fact]
    public void PushOptions_NonPositiveKeepAliveTimeout_IsRejectedNamingTheEndpoint()
    {
        var options = new PushOptions { KeepAliveTimeout = TimeSpan.Zero };

        var validate = () => options.Validate("/ws");

        validate.Should().Throw<ArgumentOutOfRangeException>().Which.Message.Should().StartWith("PushOptions of '/ws': KeepAliveTimeout (00:00:00) must be positive.");
    }

    [Fact]
    public async Task LongPoll_HeldUntilMessage_ResumesByLastEventId_AndTimesOutWith204()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(app => app.MapLongPolling("/poll/news", "news", o => o.LongPollTimeout = TimeSpan.FromSeconds(20)), time);
        var held = host.Client.GetStringAsync("/poll/news?lastEventId=0", Ct);
        Waits.Until(() => Feed(host, "news") is not null, "the poll subscribed");
        await Publish(host, "news", "n1");
        var first = JsonDocument.Parse(await held.WaitAsync(Waits.Bound, Ct)).RootElement;
        first.GetProperty("lastEventId").GetInt64().Should().Be(1);
        first.GetProperty("messages")[0].GetProperty("data").GetProperty("text").GetString().Should().Be("n1");

        await Publish(host, "news", "n2");
        await Publish(host, "news", "n3");
        Waits.Until(() => Feed(host, "news").LastId == 3, "three messages arrived");
        var resumed = JsonDocument.Parse(await host.Client.GetStringAsync("/poll/news?lastEventId=1", Ct)).RootElement;
        resumed.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("id").GetInt64()).Should().Equal(2, 3);
        resumed.GetProperty("gap").GetBoolean().Should().BeFalse();

        var idle = host.Client.GetAsync("/poll/news?lastEventId=3", Ct);
        await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(20), idle);
        using var response = await idle.WaitAsync(Waits.Bound, Ct);
        response.StatusCode.Should().Be(HttpStatusCode.NoContent);
    }

    [Fact]
    public void PushConnection_DropOldest_KeepsNewestWithinCapacity()
    {
        var connection = new PushConnection(4, SlowClientPolicy.DropOldest);
        for (var i = 1; i <= 10; i++)
        {
            connection.Offer(new PushMessage(i, "t", "1"u8.ToArray()));
        }

        var ids = new List<long>();
        while (connection.Reader.TryRead(out var m))
        {
            ids.Add(m.Id);
        }

        ids.Should().Equal(7, 8, 9, 10);
        connection.Dropped.Should().Be(6);
        connection.Disconnected.Should().BeFalse();
    }

    [Fact]
    public void PushConnection_Disconnect_CompletesWhenFull()
    {
        var connection = new PushConnection(4, SlowClientPolicy.Disconnect);
        for (var i = 1; i <= 10; i++)
        {
            connection.Offer(new PushMessage(i, "t", "1"u8.ToArray()));
        }

        connection.Disconnected.Should().BeTrue();
        var ids = new List<long>();
        while (connection.Reader.TryRead(out var m))
        {
            ids.Add(m.Id);
        }

        ids.Should().Equal(1, 2, 3, 4);
        connection.Reader.Completion.IsCompleted.Should().BeTrue();
    }

    private static PushHub Hub(KestrelHost host) => host.Services.GetRequiredService<PushHub>();

    private static TopicFeed Feed(KestrelHost host, string topic) => Hub(host).FeedAsync(topic, Ct).AsTask().GetAwaiter().GetResult();

    private static Task SendFrame(ClientWebSocket socket, string text) =>
        socket.SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text, true, Ct);

    private static async Task<string> ReceiveFrame(ClientWebSocket socket, TimeSpan? within = null)
    {
        var buffer = new byte[64 * 1024];
        var count = 0;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(within ?? Waits.Bound);
        while (true)
        {
            var result = await socket.ReceiveAsync(new ArraySegment<byte>(buffer, count, buffer.Length - count), timeout.Token);
            count += result.Count;
            if (result.EndOfMessage)
            {
                var text = Encoding.UTF8.GetString(buffer, 0, count);
                return text;
            }
        }
    }
}

/// <summary>A test's Server-Sent Events reader over a real HTTP response stream.</summary>
internal sealed class SseStream : IDisposable
{
    private readonly HttpResponseMessage _response;
    private readonly StreamReader _reader;

    private SseStream(HttpResponseMessage response, StreamReader reader)
    {
        _response = response;
        _reader = reader;
    }

    public static async Task<SseStream> OpenAsync(HttpClient client, string path, long? lastEventId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (lastEventId is { } id)
        {
            request.Headers.Add("Last-Event-ID", id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
        response.EnsureSuccessStatusCode();
        response.Content.Headers.ContentType!.MediaType.Should().Be("text/event-stream");
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync(TestContext.Current.CancellationToken));
        (await reader.ReadLineAsync(TestContext.Current.CancellationToken)).Should().Be(": connected", "the server confirms the subscription first");
        (await reader.ReadLineAsync(TestContext.Current.CancellationToken)).Should().BeEmpty();
        return new SseStream(response, reader);
    }

    public async Task<List<(long Id, string Event, string Data)>> ReadAsync(int count)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(Waits.Bound);
        var events = new List<(long, string, string)>();
        long id = 0;
        string type = string.Empty, data = string.Empty;
        var fields = 0;
        while (events.Count < count)
        {
            var line = await _reader.ReadLineAsync(timeout.Token) ?? throw new EndOfStreamException();
            if (line.Length == 0)
            {
                // A block of comments only (a keep-alive) is no event.
                if (fields > 0)
                {
                    events.Add((id, type, data));
                }

                fields = 0;
                continue;
            }

            if (!line.StartsWith(':'))
            {
                fields++;
            }

            if (line.StartsWith("id: ", StringComparison.Ordinal))
            {
                id = long.Parse(line[4..], System.Globalization.CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                type = line[7..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                data = line[6..];
            }
        }

        return events;
    }

    /// <summary>Reads the next raw line of the stream (comments included).</summary>
    public async Task<string> ReadLineAsync()
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(Waits.Bound);
        return await _reader.ReadLineAsync(timeout.Token) ?? throw new EndOfStreamException();
    }

    /// <summary>Reads events until the server closes the stream; returns how many arrived.</summary>
    public async Task<int> ReadToEndAsync()
    {
        var count = 0;
        try
        {
            while (true)
            {
                await ReadAsync(1);
                count++;
            }
        }
        catch (Exception ex) when (ex is EndOfStreamException or IOException or HttpRequestException)
        {
            return count;
        }
    }

    public void Dispose()
    {
        _reader.Dispose();
        _response.Dispose();
    }
}
